"""CamVid's sequence-disjoint validation: `holdout` draws train and val from
train.txt + val.txt by the sequence in each frame's name."""
import numpy as np
import pytest
from PIL import Image

from zoo.data import build_dataset
from zoo.data.camvid import sequence_of

# three sequences, split across the two lists the way SegNet's are (0016E5 in both)
TRAIN = ["0001TP_006690", "0001TP_006720", "0006R0_f01110", "0016E5_00390"]
VAL = ["0016E5_07959", "0016E5_07961"]


def make_tree(root, splits: dict):
    """A SegNet-layout CamVid tree under `root` with tiny frames named as `splits` says."""
    for split, stems in splits.items():
        (root / split).mkdir(exist_ok=True)
        (root / f"{split}annot").mkdir(exist_ok=True)
        for stem in stems:
            Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / split / f"{stem}.png")
            Image.fromarray(np.full((8, 10), 3, np.uint8)).save(root / f"{split}annot" / f"{stem}.png")
        (root / f"{split}.txt").write_text("".join(f"{split}/{s}.png {split}annot/{s}.png\n" for s in stems))
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path, {"train": TRAIN, "val": VAL})


def names(ds):
    return sorted(p.stem for p, _ in ds.samples)


@pytest.mark.parametrize("held", ["0001TP", "0006R0", "0016E5"])
def test_each_sequence_in_turn_is_val_and_absent_from_train(tree, held):
    train = build_dataset("camvid", tree, "train", holdout=held)
    val = build_dataset("camvid", tree, "val", holdout=held)
    assert {sequence_of(p) for p, _ in val.samples} == {held}
    assert held not in {sequence_of(p) for p, _ in train.samples}
    assert sorted(names(train) + names(val)) == sorted(TRAIN + VAL)  # every frame, once
    assert "holdout='%s'" % held in repr(val)


def test_without_holdout_the_lists_are_read_as_they_are(tree):
    assert names(build_dataset("camvid", tree, "val")) == VAL


def test_trainval_is_both_lists_unless_a_list_file_names_it(tree):
    assert names(build_dataset("camvid", tree, "trainval")) == sorted(TRAIN + VAL)
    (tree / "trainval.txt").write_text(f"train/{TRAIN[0]}.png trainannot/{TRAIN[0]}.png\n")
    assert names(build_dataset("camvid", tree, "trainval")) == [TRAIN[0]]
    with pytest.raises(ValueError, match="holdout='drives' defines the train and val splits only, not 'trainval'"):
        build_dataset("camvid", tree, "trainval", holdout="drives")


@pytest.mark.parametrize("holdout, split, message", [
    ("Seq05VD", "val", r"holdout='Seq05VD': no such sequence .*0001TP, 0006R0, 0016E5"),
    ("0006R0", "test", r"holdout='0006R0' defines the train and val splits only, not 'test'"),
    ("0016E5:abc", "val", r"holdout='0016E5:abc': cannot read '0016E5:abc'.*drives"),
    ("0016E5:9000-", "val", r"holdout='0016E5:9000-' names no frame"),
])
def test_a_holdout_that_cannot_be_drawn_is_refused_by_name(tree, holdout, split, message):
    with pytest.raises(ValueError, match=message):
        build_dataset("camvid", tree, split, holdout=holdout)


def test_real_camvid_holds_out_0006R0_whole(camvid_root):
    train = build_dataset("camvid", camvid_root, "train", holdout="0006R0")
    val = build_dataset("camvid", camvid_root, "val", holdout="0006R0")
    assert (len(train), len(val)) == (367, 101)
    assert {sequence_of(p) for p, _ in train.samples} == {"0001TP", "0016E5"}


def test_frame_ranges_hold_out_part_of_a_sequence_and_train_keeps_3_s_away(tmp_path):
    stems = {"train": ["0001TP_006690", "0001TP_007530", "0001TP_007590", "0001TP_007620", "0001TP_008520",
                       "0006R0_f01110", "0016E5_00390", "0016E5_02400"],
             "val": ["0016E5_04350", "0016E5_07959"]}
    make_tree(tmp_path, stems)
    val = build_dataset("camvid", tmp_path, "val", holdout="drives")
    train = build_dataset("camvid", tmp_path, "train", holdout="drives")
    assert names(val) == ["0001TP_007620", "0001TP_008520", "0016E5_00390", "0016E5_02400"]
    # 0001TP_007530 is 90 frame numbers (3 s) from 007620: kept out of both; 007590 too
    assert names(train) == ["0001TP_006690", "0006R0_f01110", "0016E5_04350", "0016E5_07959"]
    assert names(build_dataset("camvid", tmp_path, "val", holdout="0016E5:390-2400,0006R0")) == [
        "0006R0_f01110", "0016E5_00390", "0016E5_02400"]
    assert names(build_dataset("camvid", tmp_path, "val", holdout="0016E5:7000-")) == ["0016E5_07959"]


def test_real_camvid_drives_split(camvid_root):
    train = build_dataset("camvid", camvid_root, "train", holdout="drives")
    val = build_dataset("camvid", camvid_root, "val", holdout="drives")
    assert (len(train), len(val)) == (366, 99)
    assert not {p.name for p, _ in train.samples} & {p.name for p, _ in val.samples}
