"""MODEL_CARD.md's entries section agrees with the registry: checked on a fake index
(every cell read back from its row) and on the package's own card and index."""
import json
import re
import shutil
from pathlib import Path

import pytest

import zoo
from zoo.hub import entries
from zoo.hub import load as hub
from zoo.lab import card

REPO = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def _row(name, miou, encoder, **extra):
    return {"name": name, "url": f"{name}.safetensors", "sha256": SHA, "classes": ["sky", "road"],
            "model": {"name": "fcn8s", "encoder": encoder, "num_classes": 2, "upsample": "transposed"},
            "metrics": {"mIoU": miou, "pixel_acc": 0.875, "per_class_iou": {"sky": 0.9, "road": None}},
            "eval_protocol": {"mode": "slide", "crop_size": [360, 480], "stride": [240, 320], "scales": [1.0]},
            "cost": {"params": 1_234_567, "gflops": 12.345, "size": [360, 480]},
            "speed": {"latency_ms": 41.6, "threads": 1, "size": [360, 480]}, "dataset": "camvid",
            "recipe_file": f"recipes/{name}.yaml", "command": f"python tools/train.py recipes/{name}.yaml",
            "machine": "2-core CPU; torch 2.15.0", "date": "2026-12-01",
            "pictures": [f"docs/entries/{name}/confusion.png"], **extra}


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": [_row("fcn_b", 0.5, "test_resnet"),
                                             _row("fcn_a", 0.4321, "test_efficientnet", notes="short run")]}))
    monkeypatch.setattr(entries, "SHIPPED_INDEX", index)
    monkeypatch.delenv("ZOO_INDEX", raising=False)
    return index


def _table(section):
    return {m[0]: [c.strip() for c in m[1].split(" | ")]
            for m in re.findall(r"^\| `([^`]+)` \| (.*) \|$", section, flags=re.M)}


def test_card_rows_come_from_the_index(fake_index):
    section = card.render_entries()
    rows = _table(section)
    assert list(rows) == ["fcn_a", "fcn_b"] == zoo.list_models(pretrained=True)
    assert rows["fcn_a"] == ["fcn8s / test_efficientnet / transposed", "0.432", "—", "0.875", "sky 0.900, road —",
                             "1.23", "12.3 @ 360x480", "42 (1 thread)", "`recipes/fcn_a.yaml`",
                             "`python tools/train.py recipes/fcn_a.yaml`", "2-core CPU; torch 2.15.0", "2026-12-01"]
    assert rows["fcn_b"][:2] == ["fcn8s / test_resnet / transposed", "0.500"]
    a = section[section.index("### `fcn_a`"):section.index("### `fcn_b`")]
    assert "[confusion](docs/entries/fcn_a/confusion.png)" in a and "- **Notes**: short run" in a
    assert "slide (crop 360x480, stride 240x320), scale 1" in a and f"sha256 `{SHA}`" in a
    assert str(fake_index.parent) not in section  # the resolved weights path is not printed


def test_card_names_a_calibrated_entrys_logit_bias(fake_index):
    row = _row("fcn_c", 0.6, "test_resnet")
    row["model"]["logit_bias"] = [0.25, -0.004]
    row["intended_use"] = "street scenes from a car's front camera"
    fake_index.write_text(json.dumps({"entries": [row]}))
    section = card.render_entries()
    assert "- **Logit bias**: the entry's `logit_bias` argument, added to the logits" in section
    assert "sky +0.25, road +0.00" in section  # -0.004 is not "-0.00"
    assert "- **Intended use**: street scenes from a car's front camera" in section
    assert "logit_bias=" not in section  # the Load line shows the architecture without it


def test_update_card_keeps_the_other_sections(fake_index, tmp_path):
    path = tmp_path / "MODEL_CARD.md"
    shutil.copy(REPO / "MODEL_CARD.md", path)
    before = path.read_text()
    assert card.update_card(path) and not card.update_card(path)
    after = path.read_text()
    assert card.card_section(after).rstrip() == card.render_entries().rstrip()
    others = [h for h in re.findall(r"^## .*$", before, flags=re.M) if h != card.CARD_SECTION]
    assert others
    for heading in others:
        assert card.card_section(after, heading) == card.card_section(before, heading)


def test_model_card_agrees_with_the_shipped_index(monkeypatch):
    monkeypatch.delenv("ZOO_INDEX", raising=False)
    section = card.card_section((REPO / "MODEL_CARD.md").read_text())
    assert section is not None, "MODEL_CARD.md has no '## Zoo entries' section"
    shipped = hub.read_index(entries.SHIPPED_INDEX)
    assert set(_table(section)) == set(shipped)
    assert section.rstrip() == card.render_entries(shipped).rstrip(), \
        "MODEL_CARD.md is out of date: run `python tools/publish.py --card`"
    for entry in shipped.values():
        for picture in entry.pictures:
            assert (REPO / picture).is_file(), picture


@pytest.mark.parametrize("data, expected", [
    (None, "not recorded"),
    ({"train_split": "train", "val_split": "val"}, "camvid's `train` split, not val's frames"),
    ({"train_split": "trainval", "val_split": "val"},
     "camvid's `trainval` split: val's frames included, so the val figure is not a held-out one"),
    ({"train_split": "train", "val_split": "val", "options": {"holdout": "drives"}},
     "camvid's `train` split, less the `holdout: drives` frames it was scored on"),
])
def test_card_says_which_frames_an_entry_was_trained_on(fake_index, data, expected):
    row = _row("fcn_c", 0.5, "test_resnet", **({"recipe": {"data": data}} if data else {}))
    index = json.loads(fake_index.read_text())
    fake_index.write_text(json.dumps({**index, "entries": index["entries"] + [row]}))
    e = entries.read_index(fake_index)["fcn_c"]
    assert card.details(e)["Trained on"] == expected
