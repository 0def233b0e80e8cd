"""ADE20K (SceneParsing ADEChallengeData2016 layout): the real sample files,
a generated tree in the official layout, and the class table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data.ade20k import ADE20K, ADE20K_CLASSES, ADE20K_PALETTE, FOLDER, LAYOUT
from zoo.data.base import IGNORE_INDEX, DataError

REAL = Path(__file__).resolve().parents[2].parent / "shared/data/formats/ade20k/ADEChallengeData2016"


# ----------------------------------------------------------------------------- the real files

@pytest.fixture(scope="module")
def real_val():
    if not (REAL / "images" / "validation").is_dir():
        pytest.skip(f"ADE20K sample files not found at {REAL}")
    return ADE20K(REAL, "val")


def test_real_validation_pairs_load(real_val):
    assert len(real_val) == 3
    assert [Path(image).stem for image, _ in real_val.samples] == [
        "ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]
    for i, (image_file, label_file) in enumerate(real_val.samples):
        image, label, name = real_val.load(i)
        assert name == image_file.stem == label_file.stem
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert label.dtype == np.uint8 and label.shape == image.shape[:2]
        values = set(np.unique(label).tolist())
        assert values <= set(range(150)) | {IGNORE_INDEX}

        with Image.open(label_file) as im:
            assert im.mode == "L"
            raw = np.asarray(im)
        assert raw.shape == label.shape
        assert (raw == 0).any(), "the sample files hold 'other objects' pixels"
        assert (label[raw == 0] == IGNORE_INDEX).all()
        assert (label[raw > 0] == raw[raw > 0] - 1).all()


def test_real_sample_through_transform(real_val):
    real_val.transform = None
    sample = real_val[0]
    assert sample["image"].shape[0] == 3 and sample["image"].shape[1:] == sample["mask"].shape
    assert sample["name"] == "ADE_val_00000001"


def test_real_root_given_as_parent():
    if not REAL.is_dir():
        pytest.skip(f"ADE20K sample files not found at {REAL}")
    assert len(ADE20K(REAL.parent, "validation")) == 3


# ----------------------------------------------------------------------------- a generated tree

def _write_pair(base: Path, folder: str, stem: str, label: np.ndarray) -> None:
    h, w = label.shape
    (base / "images" / folder).mkdir(parents=True, exist_ok=True)
    (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(base / "images" / folder / f"{stem}.jpg")
    Image.fromarray(label.astype(np.uint8), mode="L").save(base / "annotations" / folder / f"{stem}.png")


def _label(*values: int, shape=(6, 8)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    for k, v in enumerate(values):
        label[k % shape[0], : k + 1] = v
    return label


@pytest.fixture
def tree(tmp_path) -> Path:
    """tmp_path/ADEChallengeData2016 with 2 training and 1 validation pairs."""
    base = tmp_path / "ADEChallengeData2016"
    _write_pair(base, "training", "ADE_train_00000002", _label(1, 2, 150))
    _write_pair(base, "training", "ADE_train_00000001", _label(3))
    _write_pair(base, "validation", "ADE_val_00000001", _label(7, 0, 12))
    return base


def test_split_selection(tree):
    train, val = ADE20K(tree, "train"), ADE20K(tree, "val")
    assert [p.name for p, _ in train.samples] == ["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    assert [p.name for p, _ in val.samples] == ["ADE_val_00000001.jpg"]
    assert all(label.parent == tree / "annotations" / "training" for _, label in train.samples)
    assert [p.name for p, _ in ADE20K(tree, "training").samples] == [p.name for p, _ in train.samples]
    assert [p.name for p, _ in ADE20K(tree, "validation").samples] == ["ADE_val_00000001.jpg"]
    assert train.num_classes == 150 and train.ignore_index == IGNORE_INDEX
    with pytest.raises(ValueError, match="no split 'test'.*train, training, val, validation"):
        ADE20K(tree, "test")


def test_label_mapping(tree):
    image, label, name = ADE20K(tree, "train").load(1)
    assert name == "ADE_train_00000002" and image.shape == (6, 8, 3) and label.shape == (6, 8)
    raw = _label(1, 2, 150)
    assert (label[raw == 0] == IGNORE_INDEX).all()
    assert (label[raw > 0] == raw[raw > 0] - 1).all()
    assert set(np.unique(label).tolist()) == {0, 1, 149, IGNORE_INDEX}


def test_root_parent_or_folder_itself(tree):
    for root in (tree, tree.parent, str(tree.parent)):
        dataset = ADE20K(root, "val")
        assert dataset.root == tree and len(dataset) == 1


def test_missing_annotation_named(tree):
    missing = tree / "annotations" / "training" / "ADE_train_00000002.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        ADE20K(tree, "train")
    assert str(missing) in str(err.value) and LAYOUT in str(err.value)
    assert len(ADE20K(tree, "val")) == 1


def test_value_above_150_refused(tree):
    _write_pair(tree, "validation", "ADE_val_00000002", _label(5, 151))
    dataset = ADE20K(tree, "val")
    dataset.load(0)
    with pytest.raises(DataError) as err:
        dataset.load(1)
    message = str(err.value)
    assert str(tree / "annotations" / "validation" / "ADE_val_00000002.png") in message and "151" in message


def test_missing_folders_named(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match="folder not found") as err:
        ADE20K(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(err.value) and LAYOUT in str(err.value)

    empty = tmp_path / "empty"
    (empty / FOLDER).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        ADE20K(empty, "train")
    assert str(empty / FOLDER / "images") in str(err.value)

    for sub in ("annotations/validation", "images/validation"):
        for f in (tree / sub).iterdir():
            f.unlink()
        (tree / sub).rmdir()
        with pytest.raises(FileNotFoundError) as err:
            ADE20K(tree, "val")
        assert str(tree / sub) in str(err.value)

    (tree / "images" / "validation").mkdir()
    (tree / "annotations" / "validation").mkdir()
    with pytest.raises(FileNotFoundError, match="no .jpg images in"):
        ADE20K(tree, "val")


# ----------------------------------------------------------------------------- the class table

def test_classes_and_palette():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert all(name == name.strip() and name for name in ADE20K_CLASSES)
    assert ADE20K_CLASSES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert ADE20K_CLASSES[-3:] == ("glass", "clock", "flag")
    assert ADE20K_PALETTE.shape == (150, 3) and ADE20K_PALETTE.dtype == np.uint8
    assert ADE20K.classes is ADE20K_CLASSES and ADE20K.palette is ADE20K_PALETTE
    assert tuple(ADE20K_PALETTE[0]) == (120, 120, 120) and tuple(ADE20K_PALETTE[-1]) == (92, 0, 255)
