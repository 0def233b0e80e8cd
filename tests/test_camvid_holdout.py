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


@pytest.fixture
def tree(tmp_path):
    for split, stems in (("train", TRAIN), ("val", VAL)):
        for stem in stems:
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / f"{split}annot").mkdir(exist_ok=True)
            Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / split / f"{stem}.png")
            Image.fromarray(np.full((8, 10), 3, np.uint8)).save(tmp_path / f"{split}annot" / f"{stem}.png")
        (tmp_path / f"{split}.txt").write_text(
            "".join(f"{split}/{s}.png {split}annot/{s}.png\n" for s in stems))
    return tmp_path


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


def test_an_unknown_sequence_or_a_test_split_is_refused_by_name(tree):
    with pytest.raises(ValueError, match=r"holdout='Seq05VD': no such sequence .*0001TP, 0006R0, 0016E5"):
        build_dataset("camvid", tree, "val", holdout="Seq05VD")
    with pytest.raises(ValueError, match=r"holdout='0006R0' defines the train and val splits only, not 'test'"):
        build_dataset("camvid", tree, "test", holdout="0006R0")


def test_real_camvid_holds_out_0006R0_whole(camvid_root):
    train = build_dataset("camvid", camvid_root, "train", holdout="0006R0")
    val = build_dataset("camvid", camvid_root, "val", holdout="0006R0")
    assert (len(train), len(val)) == (367, 101)
    assert {sequence_of(p) for p, _ in train.samples} == {"0001TP", "0016E5"}


def test_frame_ranges_hold_out_part_of_a_sequence_and_train_keeps_3_s_away(tmp_path):
    stems = {"train": ["0001TP_006690", "0001TP_007530", "0001TP_007590", "0001TP_007620", "0001TP_008520",
                       "0006R0_f01110", "0016E5_00390", "0016E5_02400"],
             "val": ["0016E5_04350", "0016E5_07959"]}
    for split, names_ in stems.items():
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for stem in names_:
            Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / split / f"{stem}.png")
            Image.fromarray(np.full((8, 10), 3, np.uint8)).save(tmp_path / f"{split}annot" / f"{stem}.png")
        (tmp_path / f"{split}.txt").write_text("".join(f"{split}/{s}.png {split}annot/{s}.png\n" for s in names_))
    val = build_dataset("camvid", tmp_path, "val", holdout="drives")
    train = build_dataset("camvid", tmp_path, "train", holdout="drives")
    assert names(val) == ["0001TP_007620", "0001TP_008520", "0016E5_00390", "0016E5_02400"]
    # 0001TP_007530 is 90 frame numbers (3 s) from 007620: kept out of both; 007590 too
    assert names(train) == ["0001TP_006690", "0006R0_f01110", "0016E5_04350", "0016E5_07959"]
    assert names(build_dataset("camvid", tmp_path, "val", holdout="0016E5:390-2400,0006R0")) == [
        "0006R0_f01110", "0016E5_00390", "0016E5_02400"]
    assert names(build_dataset("camvid", tmp_path, "val", holdout="0016E5:7000-")) == ["0016E5_07959"]


def test_an_unreadable_holdout_or_one_naming_no_frame_is_refused(tree):
    with pytest.raises(ValueError, match=r"holdout='0016E5:abc': cannot read '0016E5:abc'.*drives"):
        build_dataset("camvid", tree, "val", holdout="0016E5:abc")
    with pytest.raises(ValueError, match=r"holdout='0016E5:9000-' names no frame"):
        build_dataset("camvid", tree, "val", holdout="0016E5:9000-")


def test_real_camvid_drives_split(camvid_root):
    train = build_dataset("camvid", camvid_root, "train", holdout="drives")
    val = build_dataset("camvid", camvid_root, "val", holdout="drives")
    assert (len(train), len(val)) == (366, 99)
    assert not {p.name for p, _ in train.samples} & {p.name for p, _ in val.samples}
