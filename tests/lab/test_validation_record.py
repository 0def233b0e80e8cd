"""`segzoo publish --validation`: an entry records its recipe's figure on a sequence-disjoint
holdout, and the card shows it beside val."""
import json
from pathlib import Path

import pytest
import yaml

from zoo.hub.entries import SHIPPED_INDEX, read_index
from zoo.lab.ship import ShipError
from zoo.lab.validation import record_validation

NAME = "fcn8s_resnet10t_camvid"
CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
           "pedestrian", "bicyclist"]


@pytest.fixture
def shipped(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    index = json.loads(SHIPPED_INDEX.read_text())
    for e in index["entries"]:  # the FCN-8s entry as these tests know it, whatever it ships with now
        if e["name"] == NAME:
            e["eval_protocol"] = {"mode": "whole", "crop_size": None, "stride": None, "scales": [0.5],
                                  "flip": False, "frame_size": [360, 480]}
            e["metrics"]["mIoU"], e["validation"], e["notes"] = 0.6003, {}, ""
    (weights / "index.json").write_text(json.dumps(index))
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Card\n\n## Zoo entries\n\nold\n")
    return weights, card


def _run(tmp_path, holdout="drives", model=None, split="val", bias=True, protocol=None) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    recipe = {"model": model or {"name": "fcn8s", "encoder": "resnet10t", "upsample": "transposed"},
              "data": {"dataset": "camvid", "val_split": "val", "options": {"holdout": holdout} if holdout else {}}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = {"mIoU": 0.4921, "split": split, "per_class_iou": {c: 0.5 for c in CLASSES}}
    if bias:
        result["logit_bias"] = [0.0] * len(CLASSES)
    if protocol:
        result["protocol"] = protocol
    (run / "eval-val-whole-calibrated.json").write_text(json.dumps(result))
    return run / "eval-val-whole-calibrated.json"


def test_the_figure_lands_in_the_index_and_the_card(tmp_path, shipped):
    weights, card = shipped
    before = read_index(weights / "index.json")[NAME]
    v = record_validation(NAME, _run(tmp_path), command="segzoo train ... holdout=drives", weights_dir=weights,
                          card=card)
    assert v["holdout"] == "drives" and v["mIoU"] == 0.4921 and v["calibrated"] is True
    after = read_index(weights / "index.json")[NAME]
    assert after.validation == v
    assert after.sha256 == before.sha256 and after.metrics == before.metrics  # the weights are untouched
    text = card.read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{NAME}`"))
    assert " | 0.600 | 0.492 (drives) | " in row  # val, then holdout
    assert ("the recipe retrained without the `holdout: drives` frames scores 0.492 mIoU on them "
            "(calibrated on its train split)") in text
    assert "`segzoo train ... holdout=drives`" in text and "Against val's 0.600" in text


@pytest.mark.parametrize("kwargs,message", [
    ({"holdout": None}, r"key 'data.options.holdout' is not set"),
    ({"split": "train"}, r"split 'train' is not the holdout"),
    ({"model": {"name": "unet", "encoder": "resnet10t", "upsample": "bilinear"}},
     r"model \{'name': 'unet'.*is not entry fcn8s_resnet10t_camvid's"),
])
def test_runs_that_are_not_the_entrys_recipe_on_a_holdout_are_refused(tmp_path, shipped, kwargs, message):
    weights, card = shipped
    before = (weights / "index.json").read_text()
    with pytest.raises(ShipError, match=message):
        record_validation(NAME, _run(tmp_path, **kwargs), weights_dir=weights, card=card)
    assert (weights / "index.json").read_text() == before


def test_unknown_entry_and_a_loose_eval_file_are_named(tmp_path, shipped):
    weights, card = shipped
    with pytest.raises(ShipError, match="no shipped entry of that name"):
        record_validation("fcn8s_resnet10t_camvd", _run(tmp_path), weights_dir=weights, card=card)
    loose = tmp_path / "loose.json"
    loose.write_text("{}")
    with pytest.raises(ShipError, match="no recipe.yaml beside it"):
        record_validation(NAME, loose, weights_dir=weights, card=card)


# the FCN-8s entry's stored protocol: whole frames halved (scale 0.5), no flip
FULL_FRAME = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False,
              "frame_size": [360, 480]}


def test_a_figure_under_another_protocol_than_the_entrys_is_refused(tmp_path, shipped):
    weights, card = shipped
    before = (weights / "index.json").read_text()
    with pytest.raises(ShipError, match=r"scored under whole, scale 1, not entry fcn8s_resnet10t_camvid's "
                                        r"protocol \(whole, scales 0.5\); .* with --adopt-protocol"):
        record_validation(NAME, _run(tmp_path, protocol=FULL_FRAME), weights_dir=weights, card=card)
    assert (weights / "index.json").read_text() == before
    same = {**FULL_FRAME, "scales": [0.5]}  # the entry's own: recorded, frame size aside
    record_validation(NAME, _run(tmp_path, protocol=same), weights_dir=weights, card=card)


def test_adopting_the_holdouts_protocol_rescores_val_under_it(tmp_path, shipped):
    weights, card = shipped
    record_validation(NAME, _run(tmp_path, protocol={**FULL_FRAME, "scales": [0.5]}), weights_dir=weights,
                      card=card)  # the figure under the protocol about to be replaced: 0.4921
    calls = []

    def evaluate(name, **kwargs):
        calls.append((name, kwargs))
        return {"mIoU": 0.6123, "pixel_acc": 0.9, "mean_acc": 0.7, "per_class_iou": {c: 0.6 for c in CLASSES},
                "protocol": {**FULL_FRAME, "flip": True}}

    flipped = {**FULL_FRAME, "flip": True}
    eval_file = _run(tmp_path, protocol=flipped)
    result = json.loads(eval_file.read_text())
    eval_file.write_text(json.dumps({**result, "mIoU": 0.5156}))
    v = record_validation(NAME, eval_file, weights_dir=weights, card=card, adopt_protocol=True,
                          data_root="/data/camvid", evaluate=evaluate)
    assert calls == [(NAME, {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": True,
                             "data_root": "/data/camvid"})]
    entry = read_index(weights / "index.json")[NAME]
    assert entry.eval_protocol == flipped
    assert entry.metrics["mIoU"] == 0.6123 and entry.validation == v and v["mIoU"] == 0.5156
    assert entry.pretrained_cfg()["flip"] is True and entry.input_size == (360, 480)
    assert ("Evaluation protocol chosen on the `holdout: drives` validation: 0.516 there (0.492 under the "
            "protocol it replaces: whole, scales 0.5)") in entry.notes
    assert (f"val re-scored under it by `segzoo publish --validation {NAME} <run>/eval-val-whole-calibrated.json "
            "--adopt-protocol` (") in entry.notes
    text = card.read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{NAME}`"))
    assert " | 0.612 | 0.516 (drives) | " in row
