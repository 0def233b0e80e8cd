"""Undoing class-weighted training's prior: the logit bias every model takes, its
textbook values, `segzoo calibrate` on a trained run, and shipping a calibrated evaluation."""
import json
import math
import shutil

import pytest
import torch

import zoo
from zoo.engine.calibrate import calibrate, choose_alpha, prior_bias, read_calibration
from zoo.engine.data import spread
from zoo.hub import entries
from zoo.inference.score import evaluate_run
from zoo.lab import ship

ARCH = {"name": "unet", "encoder": "test_resnet", "decoder_channels": [16, 16, 8, 8, 8], "num_classes": 3}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_logit_bias_is_added_to_the_logits_and_rebuilds_from_the_config():
    torch.manual_seed(0)
    plain = zoo.create(**ARCH).eval()
    torch.manual_seed(0)
    biased = zoo.create(**ARCH, logit_bias=[1.0, -2.0, 0.5]).eval()
    with torch.no_grad():
        diff = biased(X) - plain(X)
    assert torch.allclose(diff, torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1).expand_as(diff), atol=1e-6)
    assert biased.config["logit_bias"] == [1.0, -2.0, 0.5]
    assert biased.state_dict().keys() == plain.state_dict().keys()  # weights load either way
    rebuilt = zoo.create(**biased.config)
    rebuilt.load_state_dict(biased.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(X), biased(X))


@pytest.mark.parametrize("bias, message", [
    ([0.0, 1.0], "unet: logit_bias has 2 values for 3 classes"),
    ([0.0, float("nan"), 1.0], "logit_bias must be a list of finite numbers, one per class"),
])
def test_a_wrong_logit_bias_is_refused(bias, message):
    with pytest.raises(ValueError, match=message):
        zoo.create(**ARCH, logit_bias=bias)


def test_prior_bias_textbook_values():
    assert prior_bias([4.0, 1.0, 0.25], 0.5) == pytest.approx([-math.log(2), 0.0, math.log(2)])
    assert prior_bias([4.0, 1.0], 0.0) == [0.0, 0.0]
    # alpha = 1 turns weighted scores log(w_c p_c) back into log p_c: the unweighted argmax.
    p, w = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.5, 1.0, 10.0])
    weighted = (w * p).log()
    assert weighted.argmax() == 2
    assert (weighted + torch.tensor(prior_bias(w.tolist(), 1.0))).argmax() == 0
    with pytest.raises(ValueError, match=r"class weights must be positive to undo them \(train.class_weights\); "
                                         r"class 1 has 0.0"):
        prior_bias([1.0, 0.0], 0.5)


@pytest.mark.train
def test_spread_samples_across_the_list(weighted_run):
    assert spread(10, 3) == [0, 3, 6]
    assert spread(4, None) == spread(4, 9) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="--max-images must be >= 1, got 0"):
        calibrate(weighted_run, max_images=0, device="cpu")


def test_read_calibration_names_a_bad_file(tmp_path):
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps({"alpha": 0.5}))
    with pytest.raises(ValueError, match=f"{bad}: not a calibration file"):
        read_calibration(bad)
    with pytest.raises(FileNotFoundError, match="no such calibration file"):
        read_calibration(tmp_path / "missing.json")


def _train(run_dir, class_weights):
    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import train
    train(recipe_from_dict({
        "model": {k: v for k, v in ARCH.items() if k != "num_classes"} | {"encoder_weights": None},
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 4, "size": 32}},
        "train": {"iters": 2, "checkpoint_interval": 2, "class_weights": class_weights},
        "eval": {"interval": 2, "max_images": 1}, "log": {"num_images": 1}}), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("calibrate") / "run", [0.5, 1.0, 2.0, 4.0, 1.0, 8.0])


@pytest.mark.train
def test_calibrate_scores_each_alpha_and_keeps_the_best(weighted_run):
    from zoo.data import make_dataset
    from zoo.engine.evaluate import evaluate
    from zoo.engine.sources import load_source
    r = calibrate(weighted_run, split="val", alphas=[1.0, 0.0, 0.5], device="cpu")
    assert [row["alpha"] for row in r["alphas"]] == [0.0, 0.5, 1.0]
    best = max(r["alphas"], key=lambda row: (row["mIoU"], -row["alpha"]))
    assert r["alpha"] == best["alpha"]
    assert r["logit_bias"] == pytest.approx(prior_bias([0.5, 1.0, 2.0, 4.0, 1.0, 8.0], r["alpha"]))
    assert json.loads((weighted_run / "calibration-val.json").read_text())["logit_bias"] == r["logit_bias"]
    assert not (weighted_run / "calibration.json").exists()  # the run's calibration comes from train
    # each row is what evaluating the model with that bias gives
    src = load_source(weighted_run)
    model, recipe = src.model, src.recipe
    model.set_logit_bias(prior_bias(r["class_weights"], 1.0))
    val = make_dataset(recipe.data, "val", train=False)
    again = evaluate(model, torch.utils.data.DataLoader(val, batch_size=1), num_classes=6)
    assert again["mIoU"] == pytest.approx(r["alphas"][2]["mIoU"])


def test_the_class_guard_rules_out_an_alpha_that_sinks_a_thin_class():
    def row(alpha, miou, pole, road):
        return {"alpha": alpha, "mIoU": miou, "per_class_iou": {"pole": pole, "road": road, "sign": None}}
    rows = [row(0.0, 0.530, 0.146, 0.90), row(0.25, 0.535, 0.120, 0.91), row(0.5, 0.540, 0.002, 0.93)]
    assert choose_alpha(rows)[0]["alpha"] == 0.5  # no guard: the best mIoU
    best, ruled_out = choose_alpha(rows, max_class_drop=0.05)
    assert best["alpha"] == 0.25 and ruled_out == {0.5: "pole 0.146 -> 0.002, a drop over 0.05"}
    best, ruled_out = choose_alpha(rows, max_class_drop=0.0)
    assert best["alpha"] == 0.0 and set(ruled_out) == {0.25, 0.5}
    with pytest.raises(ValueError, match="include 0 in the alphas"):
        choose_alpha(rows[1:], max_class_drop=0.05)


@pytest.mark.train
def test_calibrate_with_a_class_guard_scores_alpha_zero_and_keeps_every_class(weighted_run, capsys):
    from zoo.commands.calibrate import main
    main([str(weighted_run), "--split", "val", "--alphas", "0.5", "1", "--max-class-drop", "0", "--device", "cpu"])
    printed = capsys.readouterr().out.splitlines()
    r = json.loads((weighted_run / "calibration-val.json").read_text())
    assert printed[-1] == f"chosen alpha {r['alpha']:g}; wrote {weighted_run / 'calibration-val.json'}"
    rows = printed[2:5]
    assert [line.split()[0] for line in rows] == ["0.00", "0.50", "1.00"]
    assert sum(line.endswith(" <") for line in rows) == 1
    assert sum("ruled out: " in line for line in rows) == sum("ruled_out" in row for row in r["alphas"])
    assert [row["alpha"] for row in r["alphas"]] == [0.0, 0.5, 1.0] and r["max_class_drop"] == 0.0
    base = r["alphas"][0]["per_class_iou"]
    chosen = next(row for row in r["alphas"] if row["alpha"] == r["alpha"])
    assert "ruled_out" not in chosen
    assert all(chosen["per_class_iou"][c] >= v for c, v in base.items() if v is not None)
    for row in r["alphas"]:
        if "ruled_out" in row:
            assert any(v is not None and row["per_class_iou"][c] < v for c, v in base.items())
    with pytest.raises(ValueError, match="--max-class-drop must be >= 0"):
        calibrate(weighted_run, split="val", max_class_drop=-0.1, device="cpu")


@pytest.mark.train
def test_calibrated_evaluation_is_kept_apart_and_ships_its_bias(weighted_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(weighted_run, run_dir)
    cal = calibrate(run_dir, alphas=[1.0], device="cpu")
    plain = evaluate_run(run_dir, device="cpu")
    calibrated = evaluate_run(run_dir, device="cpu", calibration=run_dir / "calibration.json")
    assert calibrated["logit_bias"] == cal["logit_bias"] and "logit_bias" not in plain
    stored = json.loads((run_dir / "eval-val-whole.json").read_text())
    assert stored["mIoU"] == plain["mIoU"]
    assert json.loads((run_dir / "eval-val-whole-calibrated.json").read_text())["mIoU"] == calibrated["mIoU"]

    pictures = run_dir / "pictures-calibrated"
    assert sorted(p.name for p in pictures.iterdir()) == ["00_val_000000.png", "confusion.png"]

    monkeypatch.setattr(ship, "LATENCY_S", 0.05)
    ship.ship(run_dir, "unet_calibrated", eval_file=run_dir / "eval-val-whole.json",
              weights_dir=tmp_path / "weights", card=tmp_path / "repo" / "MODEL_CARD.md")
    weights = tmp_path / "weights" / "unet_calibrated.safetensors"
    before = weights.stat().st_ino, weights.read_bytes()
    ship.ship(run_dir, "unet_calibrated", eval_file=run_dir / "eval-val-whole-calibrated.json",
              weights_dir=tmp_path / "weights", card=tmp_path / "repo" / "MODEL_CARD.md", force=True)
    assert (weights.stat().st_ino, weights.read_bytes()) == before  # same weights: the file stays
    docs = tmp_path / "repo" / "docs" / "entries" / "unet_calibrated"
    assert (docs / "confusion.png").read_bytes() == (pictures / "confusion.png").read_bytes()
    assert (docs / "confusion.png").read_bytes() != (run_dir / "pictures" / "confusion.png").read_bytes()
    monkeypatch.setattr(entries, "SHIPPED_INDEX", tmp_path / "weights" / "index.json")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.delenv("ZOO_INDEX", raising=False)
    model = zoo.create("unet_calibrated", pretrained=True)
    assert model.config["logit_bias"] == pytest.approx(cal["logit_bias"])
    assert model.meta["metrics"]["mIoU"] == calibrated["mIoU"]
    # the bias belongs to the entry's six classes: a fine-tuning to five drops it
    with pytest.warns(UserWarning, match="head.classifier.weight"):
        five = zoo.create("unet_calibrated", pretrained=True, num_classes=5)
    assert five.logit_bias is None and "logit_bias" not in five.config
    # a recipe that starts from the entry trains without its bias, unless it names one
    from zoo.data import make_dataset
    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import build_model
    data = {"dataset": "synthetic", "options": {"num_images": 2, "size": 32}}
    plain = recipe_from_dict({"model": {"pretrained": "unet_calibrated"}, "data": data})
    scenes = make_dataset(plain.data, "train", train=False)
    start = build_model(plain, scenes)
    assert start.logit_bias is None and "logit_bias" not in start.config
    assert torch.equal(start.state_dict()["head.classifier.weight"], model.state_dict()["head.classifier.weight"])
    named = recipe_from_dict({"model": {"pretrained": "unet_calibrated", "logit_bias": [0.5] * 6}, "data": data})
    assert build_model(named, scenes).logit_bias.tolist() == [0.5] * 6


@pytest.mark.train
def test_a_published_folder_carries_the_calibrated_evaluation(weighted_run, tmp_path):
    from zoo.commands.publish import main as publish_main
    from zoo.hub.load import sha256_of
    from zoo.lab.publish import publish, push_to_hub
    run_dir = tmp_path / "run"
    shutil.copytree(weighted_run, run_dir)
    cal = calibrate(run_dir, alphas=[1.0], device="cpu")
    calibrated = evaluate_run(run_dir, device="cpu", calibration=run_dir / "calibration.json")
    out = tmp_path / "dist" / "unet_calibrated"
    publish_main([str(run_dir), "--name", "unet_calibrated", "--out", str(out),
                  "--eval", str(run_dir / "eval-val-whole-calibrated.json")])
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["logit_bias"] == pytest.approx(cal["logit_bias"])
    assert config["metrics"]["mIoU"] == calibrated["mIoU"]
    model = zoo.load(out.as_uri(), sha256=sha256_of(out / "config.json"))
    assert model.logit_bias.tolist() == pytest.approx(cal["logit_bias"])
    # without --eval: the checkpoint's own metrics and no bias, as before
    plain = publish(run_dir, "unet_plain", tmp_path / "plain")
    from zoo.hub.formats import load_meta, resolve_run
    assert "logit_bias" not in plain.model
    assert plain.metrics["mIoU"] == load_meta(resolve_run(run_dir))["metrics"]["mIoU"]
    # an evaluation of other weights is refused, naming the file
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**calibrated, "checkpoint": "runs/x/checkpoints/iter_000099",
                                 "weights_sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"other.json: scored other weights \(checkpoint 'iter_000099', "
                                         r"sha256 000000000000...\) than the ones published"):
        publish(run_dir, "unet_other", tmp_path / "other", eval_file=other)
    with pytest.raises(ValueError, match="unet_resnet10t_camvid is an entry, which carries its own"):
        push_to_hub("unet_resnet10t_camvid", "org/unet", eval_file=other)


@pytest.mark.train
def test_calibrate_needs_class_weights(tmp_path):
    run_dir = _train(tmp_path / "plain", None)
    with pytest.raises(ValueError, match="its recipe trains without train.class_weights, so there is no "
                                         "class prior to undo"):
        calibrate(run_dir, device="cpu")
