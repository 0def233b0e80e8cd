"""Shipping a run inside the package: fp16 weights + index row + pictures + card,
loaded offline with an empty cache, refused when tampered, over budget or not better;
fine-tuning from an entry, in code and from a recipe."""
import contextlib
import io
import json
import re
import runpy
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import zoo
from tests.tiny_run import CLASSES, make_run, predict
from zoo.hub import entries
from zoo.hub import load as hub
from zoo.lab import ship
from zoo.lab.card import card_section

REPO = Path(__file__).resolve().parents[2]
NAME = "unet_tiny_shipped"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "unet_tiny"
    return run_dir, make_run(run_dir, data_root=str(run_dir.parent / "data" / "synthetic"))


@pytest.fixture(scope="module")
def shipped_once(run, tmp_path_factory):
    """The run shipped once through tools/publish.py into a temporary package and repository."""
    root = tmp_path_factory.mktemp("shipped")
    paths = {"weights": root / "pkg" / "weights", "card": root / "repo" / "MODEL_CARD.md"}
    paths["card"].parent.mkdir()
    paths["card"].write_text("# Model card\n\n## Zoo entries\n\nstale text\n\n## Training results\n\nkept\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ship, "LATENCY_S", 0.1)
        printed = _cli([str(run[0]), "--ship", NAME, "--recipe", "recipes/tiny.yaml",
                        "--weights-dir", str(paths["weights"]), "--card", str(paths["card"])])
    return paths, printed


@pytest.fixture
def shipped(shipped_once, tmp_path, monkeypatch):
    """A copy of the shipped package and repository, which the registry reads;
    returns (paths, printed summary)."""
    root = shipped_once[0]["weights"].parents[1]
    shutil.copytree(root, tmp_path / "copy")
    paths = {k: tmp_path / "copy" / v.relative_to(root) for k, v in shipped_once[0].items()}
    monkeypatch.setattr(entries, "SHIPPED_INDEX", paths["weights"] / "index.json")
    monkeypatch.setattr(ship, "LATENCY_S", 0.05)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.delenv("ZOO_INDEX", raising=False)
    return paths, shipped_once[1]


def _cli(argv) -> str:
    main = runpy.run_path(str(REPO / "tools" / "publish.py"), run_name="publish_cli")["main"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue()


PROTOCOL = {"mode": "slide", "crop_size": [32, 32], "stride": [16, 16], "scales": [1.0], "flip": True}


def _eval_file(run_dir, path, miou, checkpoint="iter_000002", bias=None):
    """An evaluation of a checkpoint (default the best, iteration 2) with a given mIoU."""
    from zoo.hub.formats import weights_sha256
    ckpt = run_dir / "checkpoints" / checkpoint
    result = {"mIoU": miou, "pixel_acc": 0.9, "per_class_iou": {"sky": 0.5, "road": 0.6, "car": 0.1},
              "checkpoint": str(ckpt), "weights_sha256": weights_sha256(ckpt), "protocol": PROTOCOL}
    if bias is not None:
        result["logit_bias"] = bias
    path.write_text(json.dumps(result))
    return path


def _holdout_file(folder, miou, holdout="drives", protocol=PROTOCOL, bias=False):
    """An evaluation on its holdout of the entry's recipe retrained with data.options.holdout."""
    from tests.tiny_run import MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(
        {"model": MODEL, "data": {"dataset": "synthetic", "options": {"holdout": holdout}}}))
    result = {"mIoU": miou, "split": "val", "per_class_iou": {c: 0.3 for c in CLASSES}, "protocol": protocol}
    if bias:
        result["logit_bias"] = [0.0] * len(CLASSES)
    (folder / "eval.json").write_text(json.dumps(result))
    return folder / "eval.json"


@pytest.mark.train
def test_ship_then_create_offline_with_an_empty_cache(shipped, run):
    paths, printed = shipped
    weights = paths["weights"] / f"{NAME}.safetensors"
    assert {v.dtype for v in load_file(str(weights)).values()} == {torch.float16, torch.int64}
    assert weights.stat().st_mode & 0o777 == 0o644  # readable by whoever installs the package
    assert zoo.list_models(pretrained=True) == [NAME]
    model = zoo.create(NAME, pretrained=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.allclose(predict(model), run[1][2], atol=2e-2)  # best = iteration 2, through fp16
    assert not torch.allclose(predict(model), run[1][3], atol=2e-2)
    assert model.meta["classes"] == CLASSES and model.meta["metrics"]["mIoU"] == pytest.approx(0.2)
    assert not list((Path(hub.cache_dir())).glob("**/*.safetensors"))  # read in place, nothing cached
    lines = printed.strip().splitlines()
    assert len(lines) == 2 and lines[0] == f"shipped {NAME}: val mIoU 0.2000, pixel acc 0.7000"


@pytest.mark.train
def test_index_row_is_complete_and_local_path_free(shipped, run):
    paths, _ = shipped
    text = (paths["weights"] / "index.json").read_text()
    assert str(run[0].parent) not in text and str(paths["weights"]) not in text
    row = json.loads(text)["entries"][0]
    assert row["url"] == f"{NAME}.safetensors" and row["model"]["encoder_weights"] is None
    assert row["sha256"] == hub.sha256_of(paths["weights"] / f"{NAME}.safetensors")
    assert row["metrics"]["per_class_iou"] == {"sky": pytest.approx(0.2), "road": 0.2, "car": None}
    assert row["recipe"]["data"]["root"] == "<data.root>" and row["recipe_file"] == "recipes/tiny.yaml"
    assert row["command"] == "python tools/train.py recipes/tiny.yaml"
    assert row["cost"]["size"] == [360, 480] and row["cost"]["params"] == sum(
        p.numel() for p in zoo.create(NAME).parameters())
    assert row["cost"]["gflops"] > 0 and row["speed"]["latency_ms"] > 0 and row["speed"]["threads"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", row["date"]) and "torch" in row["machine"]
    assert row["pictures"] == [f"docs/entries/{NAME}/{n}" for n in
                               ("confusion.png", "00_frame_a.png", "01_frame_b.png")]
    for p in row["pictures"]:
        assert (paths["card"].parent / p).is_file()


@pytest.mark.train
def test_card_regenerated_by_ship(shipped):
    paths, _ = shipped
    text = paths["card"].read_text()
    section = card_section(text)
    assert f"| `{NAME}` | unet / test_resnet / bilinear | 0.200 | — | 0.700 | sky 0.200, road 0.200, car — |" in section
    assert f"[confusion](docs/entries/{NAME}/confusion.png)" in section
    assert text.endswith("## Training results\n\nkept\n") and "stale text" not in text


@pytest.mark.train
def test_tampered_shipped_file_refused_by_name(shipped):
    weights = shipped[0]["weights"] / f"{NAME}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(hub.ChecksumError, match=f"sha256 mismatch for {re.escape(str(weights))}"):
        zoo.create(NAME, pretrained=True)
    assert weights.is_file()


@pytest.mark.train
def test_replace_only_with_a_gain(shipped, run, tmp_path):
    """Other weights (the last checkpoint, where the best is shipped) need +0.02 on val."""
    paths = shipped[0]
    sha = hub.sha256_of(paths["weights"] / f"{NAME}.safetensors")
    kwargs = {"weights_dir": paths["weights"], "card": paths["card"], "pointer": "last"}
    with pytest.raises(ship.ShipError, match=rf"{NAME}: val mIoU 0.2190 does not improve on the shipped "
                                             r"0.2000 by at least 0.02 \(needs >= 0.2200: new weights must "
                                             r"gain 0.02\).*--force"):
        ship.ship(run[0], NAME, eval_file=_eval_file(run[0], tmp_path / "e.json", 0.219, "iter_000003"), **kwargs)
    assert hub.sha256_of(paths["weights"] / f"{NAME}.safetensors") == sha
    s = ship.ship(run[0], NAME, eval_file=_eval_file(run[0], tmp_path / "e.json", 0.221, "iter_000003"), **kwargs)
    assert s["replaced"] == pytest.approx(0.2) and s["mIoU"] == 0.221 and s["file_replaced"]
    entry = hub.read_index(paths["weights"] / "index.json")[NAME]
    assert entry.eval_protocol["mode"] == "slide" and entry.metrics["per_class_iou"]["car"] == 0.1
    assert entry.sha256 != sha
    s = ship.ship(run[0], NAME, force=True, **{**kwargs, "pointer": "best"})  # back to the best's own 0.2
    assert s["mIoU"] == pytest.approx(0.2) and s["file_replaced"]  # (safetensors orders metadata keys freely)


@pytest.mark.train
def test_a_reship_of_the_same_file_needs_no_gain_only_no_loss(shipped, run, tmp_path):
    """A new calibration of the shipped weights changes no byte of the file: it may land
    without +0.02, never below the figure it replaces."""
    paths = shipped[0]
    kwargs = {"weights_dir": paths["weights"], "card": paths["card"]}
    with pytest.raises(ship.ShipError, match=r"val mIoU 0.1990 does not improve on the shipped 0.2000 by at "
                                             r"least 0 \(needs >= 0.2000: a re-ship of the same file must not lose\)"):
        ship.ship(run[0], NAME, eval_file=_eval_file(run[0], tmp_path / "e.json", 0.199, bias=[0.0, 0.1, 0.2]),
                  **kwargs)
    s = ship.ship(run[0], NAME, eval_file=_eval_file(run[0], tmp_path / "e.json", 0.205, bias=[0.0, 0.1, 0.2]),
                  **kwargs)
    assert not s["file_replaced"] and s["mIoU"] == 0.205
    assert hub.read_index(paths["weights"] / "index.json")[NAME].model["logit_bias"] == [0.0, 0.1, 0.2]


@pytest.mark.train
def test_an_entry_with_a_holdout_validation_is_judged_on_it(shipped, run, tmp_path):
    paths = shipped[0]
    index = json.loads((paths["weights"] / "index.json").read_text())
    index["entries"][0]["validation"] = {"holdout": "drives", "mIoU": 0.3, "per_class_iou": {}, "calibrated": False}
    (paths["weights"] / "index.json").write_text(json.dumps(index))
    sha = hub.sha256_of(paths["weights"] / f"{NAME}.safetensors")
    kwargs = {"weights_dir": paths["weights"], "card": paths["card"], "pointer": "last",
              "eval_file": _eval_file(run[0], tmp_path / "e.json", 0.5, "iter_000003")}  # +0.3 on val: not the rule
    refused = {
        None: r"judged on its `holdout: drives` validation \(0.3000\); give --holdout",
        _holdout_file(tmp_path / "h1", 0.319): r"holdout drives mIoU 0.3190 does not improve on the shipped 0.3000 "
                                               r"by at least 0.02 \(needs >= 0.3200",
        _holdout_file(tmp_path / "h2", 0.4, holdout="seq05"): r"scored holdout 'seq05', the entry's validation is "
                                                              r"holdout 'drives'; the figures do not compare",
        _holdout_file(tmp_path / "h3", 0.4, protocol={**PROTOCOL, "flip": False}):
            r"h3/eval.json: scored under .*, not the protocol shipped",
        _holdout_file(tmp_path / "h4", 0.4, bias=True): r"h4/eval.json: scored with a logit bias, the entry ships "
                                                        r"without one",
    }
    for holdout_file, message in refused.items():
        with pytest.raises(ship.ShipError, match=message):
            ship.ship(run[0], NAME, holdout_file=holdout_file, **kwargs)
        assert hub.sha256_of(paths["weights"] / f"{NAME}.safetensors") == sha
    printed = _cli([str(run[0]), "--ship", NAME, "--pointer", "last", "--eval", str(kwargs["eval_file"]),
                    "--holdout", str(_holdout_file(tmp_path / "h5", 0.321)), "--holdout-command",
                    "segzoo train tiny.yaml data.options.holdout=drives", "--weights-dir", str(paths["weights"]),
                    "--card", str(paths["card"])])
    assert printed.startswith(f"shipped {NAME}: val mIoU 0.5000, pixel acc 0.9000 (replacing val mIoU 0.2000); "
                              "holdout drives mIoU 0.3210 (was 0.3000) recorded\n")
    entry = hub.read_index(paths["weights"] / "index.json")[NAME]
    assert entry.validation["holdout"] == "drives" and entry.validation["mIoU"] == 0.321
    assert entry.validation["command"] == "segzoo train tiny.yaml data.options.holdout=drives"


@pytest.mark.train
@pytest.mark.parametrize("scored, message", [
    ("iter_000003", r"e.json: scored other weights \(checkpoint 'iter_000003', sha256 [0-9a-f]{12}...\) "
                    r"than the ones published, .*iter_000002; evaluate those with `segzoo eval`"),
    (None, r"e.json: records no weights_sha256 of the weights it scored \(checkpoint 'iter_000002'\); "
           r"evaluate .*iter_000002 again with `segzoo eval`"),
    ("iter_000002 onnxruntime int8", r"e.json: scored the weights through onnxruntime int8, not as "
                                     r"published \(torch fp32\); evaluate .*iter_000002 with `segzoo eval`"),
    ("iter_000002 split=train", r"e.json: scored split 'train', not the run's val split 'val'; evaluate "
                                r".*iter_000002 on it"),
    ("iter_000002 max_images=2", r"e.json: scored the first 2 images only \(--max-images\); evaluate "
                                 r".*iter_000002 on the whole val split"),
])
def test_eval_file_of_other_weights_refused(run, tmp_path, scored, message):
    """Published val figures come from these very weights, eager, on the whole val split."""
    from zoo.hub.formats import weights_sha256
    ckpts = run[0] / "checkpoints"
    result = {"mIoU": 0.9, "pixel_acc": 0.9, "per_class_iou": {}, "checkpoint": str(ckpts / "iter_000002")}
    if scored:  # another checkpoint's weights, these run through another backend, or another split
        folder, *rest = scored.split()
        result.update(checkpoint=str(ckpts / folder), weights_sha256=weights_sha256(ckpts / folder))
        changes = dict(r.split("=") for r in rest if "=" in r)
        result.update({k: int(v) if v.isdigit() else v for k, v in changes.items()})
        backend = [r for r in rest if "=" not in r]
        if backend:
            result["backend"] = {"backend": backend[0], "precision": backend[1]}
    (tmp_path / "e.json").write_text(json.dumps(result))
    with pytest.raises(ship.ShipError, match=message):
        ship.ship(run[0], NAME, eval_file=tmp_path / "e.json", weights_dir=tmp_path / "w",
                  card=tmp_path / "card.md", latency_s=0.05)
    assert not (tmp_path / "w" / f"{NAME}.safetensors").exists()


@pytest.mark.train
def test_two_runs_stopped_at_one_iteration_do_not_share_evaluations(tmp_path, monkeypatch):
    """Issue 22, item 1: two 2-iteration runs (seeds 0 and 1) both end in iter_000002; the
    second's evaluation may not go out with the first's weights, by publish or by ship."""
    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import train
    from zoo.inference.score import evaluate_run
    from zoo.lab.publish import publish
    runs = {}
    for seed in (0, 1):
        runs[seed] = tmp_path / f"seed{seed}"
        train(recipe_from_dict({
            "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
                      "decoder_channels": [8, 8, 8, 8, 8]},
            "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                     "options": {"num_images": 4, "size": 32}},
            "train": {"iters": 2, "seed": seed, "threads": 1, "checkpoint_interval": 2},
            "eval": {"interval": 2, "max_images": 2}, "log": {"num_images": 0}}), runs[seed])
    result = evaluate_run(runs[1], device="cpu")
    second = Path(result["written"])
    assert json.loads(second.read_text())["weights_sha256"] == result["weights_sha256"]
    assert Path(result["checkpoint"]).name == "iter_000002"
    with pytest.raises(ValueError, match=f"{second}: scored other weights"):
        publish(runs[0], "unet_first", tmp_path / "out", eval_file=second)
    monkeypatch.setattr(ship, "LATENCY_S", 0.05)
    with pytest.raises(ship.ShipError, match=f"{second}: scored other weights"):
        ship.ship(runs[0], NAME, eval_file=second, weights_dir=tmp_path / "w", card=tmp_path / "card.md")
    published = publish(runs[1], "unet_second", tmp_path / "out", eval_file=second)
    assert published.metrics["mIoU"] == result["mIoU"]
    # the trainer's own eval.json names the weights it scored too
    assert json.loads((runs[0] / "eval.json").read_text())["weights_sha256"] != result["weights_sha256"]


@pytest.mark.train
@pytest.mark.parametrize("limit, message", [
    ("MAX_FILE_BYTES", r"MB of fp16 weights, over the 0 MB per-file budget"),
    ("MAX_TOTAL_BYTES", r"the shipped weights would total 0.\d MB, over the 0 MB budget"),
])
def test_size_budget_enforced(run, tmp_path, monkeypatch, limit, message):
    monkeypatch.setattr(ship, limit, 1000)
    monkeypatch.setattr(ship, "LATENCY_S", 0.05)
    with pytest.raises(ship.ShipError, match=f"{NAME}: .*{message}"):
        ship.ship(run[0], NAME, weights_dir=tmp_path / "w", card=tmp_path / "card.md")
    assert not list((tmp_path / "w").iterdir()) and not (tmp_path / "card.md").exists()


def test_recorded_recipe_reads_as_the_file_that_reproduces_the_entry(tmp_path):
    """A stage started from the entry it replaces resolved `model.pretrained` to the entry's
    own name and `data.root` to this machine's folder: the row takes the recipe file's values;
    every other key stays as the run resolved it."""
    resolved = {"model": {"name": "unet", "pretrained": NAME, "fc_channels": 64},
                "data": {"root": "/work/data/camvid", "batch_size": 8, "options": {"cache": "/tmp/c"}},
                "train": {"iters": 600}}
    file = tmp_path / "stage.yaml"
    file.write_text("model: {name: unet, pretrained: runs/first_stage}\n"
                    "data: {root: camvid, batch_size: 4}\ntrain: {iters: 300}\n")
    row = ship.recorded_recipe(resolved, NAME, str(file))
    assert row == {"model": {"name": "unet", "pretrained": "runs/first_stage", "fc_channels": 64},
                   "data": {"root": "camvid", "batch_size": 8, "options": {"cache": "<data.options.cache>"}},
                   "train": {"iters": 600}}  # an override on the command line is what the run did
    assert ship.recorded_recipe(resolved, NAME)["model"]["pretrained"] == NAME  # no file: as resolved
    assert ship.recorded_recipe(resolved, NAME)["data"]["root"] == "<data.root>"
    assert ship.recorded_recipe(resolved, "other_entry", str(file))["model"]["pretrained"] == NAME


def test_the_package_weights_fit_the_budget_and_their_index():
    weights_dir = entries.SHIPPED_INDEX.parent
    files = {p.name: p.stat().st_size for p in weights_dir.glob("*.safetensors")}
    assert all(size <= ship.MAX_FILE_BYTES for size in files.values()), files
    assert sum(files.values()) <= ship.MAX_TOTAL_BYTES, files
    rows = json.loads(entries.SHIPPED_INDEX.read_text())["entries"]
    assert sorted(r["url"] for r in rows) == sorted(files)  # no file without an entry, nor the reverse
    for r in rows:
        assert hub.sha256_of(weights_dir / r["url"]) == r["sha256"], r["name"]
        assert "/work/" not in json.dumps(r) and "/home/" not in json.dumps(r)


def test_pyproject_ships_the_weights():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'(?m)^zoo = \[.*"weights/index.json".*"weights/\*\.safetensors"', text)


# ---------------------------------------------------------------- fine-tuning

@pytest.mark.train
def test_fine_tune_skips_the_classifier_and_says_so(shipped):
    entry = zoo.create(NAME, pretrained=True)
    with pytest.warns(UserWarning, match=re.escape(
            f"{NAME}: 2 tensor(s) whose shapes differ were not loaded and keep fresh values: "
            "head.classifier.weight [3, 8, 3, 3] -> [5, 8, 3, 3], head.classifier.bias [3] -> [5]")):
        model = zoo.create(NAME, pretrained=True, num_classes=5)
    skipped = model.meta["skipped"]
    assert skipped == ["head.classifier.weight", "head.classifier.bias"]
    own, theirs = model.state_dict(), entry.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if k not in skipped)
    assert all(own[k].shape[0] == 5 for k in skipped) and "classes" not in model.meta
    assert predict(model).shape[1] == 5


@pytest.mark.train
def test_recipe_starts_from_an_entry(shipped):
    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import build_model
    recipe = recipe_from_dict({"model": {"pretrained": NAME}, "data": {"dataset": "synthetic"}})

    class FiveClasses:
        classes = ["a", "b", "c", "d", "e"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(recipe, FiveClasses())
    assert any("whose shapes differ were not loaded" in str(w.message) for w in caught)
    entry = zoo.create(NAME, pretrained=True)
    own, theirs = model.state_dict(), entry.state_dict()
    assert model.config["num_classes"] == 5 and model.config["encoder"] == "test_resnet"
    loaded = [k for k in own if own[k].shape == theirs[k].shape]
    assert len(loaded) == len(own) - 2 and all(torch.equal(own[k], theirs[k]) for k in loaded)
    three = build_model(recipe_from_dict({"model": {"name": "unet", "encoder": "test_resnet",
                                                    "decoder_channels": [16, 16, 8, 8, 8], "pretrained": NAME}}),
                        type("Three", (), {"classes": CLASSES})())
    assert torch.equal(predict(three), predict(entry))  # same shapes: every tensor loaded


@pytest.mark.train
def test_recipe_starts_from_a_local_run_checkpoint_or_file(run, tmp_path):
    """A second training stage (say at full resolution) starts from a run of the first:
    its best checkpoint, a named checkpoint, or a weights file; a five-class head starts fresh."""
    from tests.tiny_run import MODEL
    from zoo.engine.recipe import RecipeError, recipe_from_dict
    from zoo.engine.trainer import build_model
    run_dir, outputs = run
    arch = {k: v for k, v in MODEL.items() if k != "num_classes"}
    three = type("Three", (), {"classes": CLASSES})()
    for source, iteration in ((run_dir, 2), (run_dir / "checkpoints" / "iter_000003", 3),
                              (run_dir / "checkpoints" / "iter_000002" / hub.WEIGHTS, 2)):
        model = build_model(recipe_from_dict({"model": {**arch, "pretrained": str(source)}}), three)
        assert torch.equal(predict(model), outputs[iteration]), source
        assert model.meta["initialised_from"] == str(source) and model.meta["skipped"] == []
    with pytest.warns(UserWarning, match="head.classifier.weight"):
        five = build_model(recipe_from_dict({"model": {**arch, "pretrained": str(run_dir)}}),
                           type("Five", (), {"classes": list("abcde")})())
    assert five.meta["skipped"] == ["head.classifier.weight", "head.classifier.bias"]
    with pytest.raises(RecipeError, match=r"key 'model.name': required when model.pretrained is a local run"):
        recipe_from_dict({"model": {"pretrained": str(run_dir)}})
    with pytest.raises(FileNotFoundError, match=r"no_such_run: not a run folder, checkpoint folder, published"):
        zoo.create(init_from=str(tmp_path / "no_such_run"), **arch)
    with pytest.raises(TypeError, match=r"give the model's name \(and arguments\) too, or zoo.load\(\) it"):
        zoo.create(init_from=str(run_dir))


@pytest.mark.slow
def test_ship_a_run_of_the_trainer(tmp_path, monkeypatch):
    """tools/train.py for four iterations, tools/eval.py, then --ship with that evaluation."""
    import subprocess
    import sys
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "quick"
    subprocess.run([sys.executable, "tools/train.py", "recipes/quickstart.yaml", "train.iters=4",
                    "train.warmup_iters=0", "eval.interval=2", "train.checkpoint_interval=2",
                    "--run-dir", str(run_dir)], cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "tools/eval.py", str(run_dir), "--split", "val"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    card = tmp_path / "repo" / "MODEL_CARD.md"
    monkeypatch.setattr(ship, "LATENCY_S", 0.05)
    s = ship.ship(run_dir, "unet_quick", eval_file=run_dir / "eval-val-whole.json",
                  weights_dir=tmp_path / "weights", card=card, recipe_file="recipes/quickstart.yaml")
    assert s["mIoU"] == json.loads((run_dir / "eval-val-whole.json").read_text())["mIoU"]
    monkeypatch.setattr(entries, "SHIPPED_INDEX", tmp_path / "weights" / "index.json")
    monkeypatch.delenv("ZOO_INDEX", raising=False)
    model = zoo.create("unet_quick", pretrained=True)
    assert model.meta["classes"][0] == "sky" and len(model.meta["metrics"]["per_class_iou"]) == 6
    assert (card.parent / "docs" / "entries" / "unet_quick" / "confusion.png").is_file()
