"""The label ceiling of an output stride: hand-computed cases and the command on real CamVid."""
import pytest
import torch

from zoo.lab.ceiling import label_ceiling, pooled_and_upsampled


def _halves(size=4):
    label = torch.zeros(size, size, dtype=torch.long)
    label[:, size // 2:] = 1
    return label


def test_one_cell_per_map_paints_the_majority_everywhere():
    # stride 4 on a 4x4 map: one cell holding half class 0, half class 1; the tie goes to class 0
    got = pooled_and_upsampled(_halves(), 2, (1, 1), ignore_index=255)
    assert torch.equal(got, torch.zeros(4, 4, dtype=torch.long))
    m = label_ceiling([_halves()], 2, [4, 2, 1])
    assert m[4]["per_class_iou"] == {"0": 0.5, "1": 0.0} and m[4]["mIoU"] == 0.25
    # stride 2: pure cells, and the bilinear boundary falls between columns 1 and 2 exactly
    assert m[2]["mIoU"] == 1.0 and m[1]["mIoU"] == 1.0


def test_a_one_pixel_pole_vanishes_at_stride_8_and_survives_at_1():
    label = torch.zeros(32, 32, dtype=torch.long)
    label[:, 13] = 1
    m = label_ceiling([label], 2, [8, 1])
    assert m[8]["per_class_iou"]["1"] == 0.0 and m[1]["per_class_iou"]["1"] == 1.0


def test_scale_sets_the_grid_and_ignored_pixels_count_for_nothing():
    label = _halves(8)
    label[:, :2] = 255  # ignored: the left cell is all "a" among its labelled pixels
    # scale 0.5 and stride 2: a 2x2 grid of cells 4 pixels wide, each pure where labelled
    m = label_ceiling([label], 2, [2], scale=0.5, class_names=["a", "b"])
    assert m[2]["per_class_iou"] == {"a": 1.0, "b": 1.0}
    # scale 0.25: one cell, 16 labelled pixels of "a" against 32 of "b": "b" everywhere
    m = label_ceiling([label], 2, [2], scale=0.25, class_names=["a", "b"])
    assert m[2]["per_class_iou"] == {"a": 0.0, "b": 32 / 48}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"strides must be positive integers, got \[0\]"):
        label_ceiling([_halves()], 2, [0])
    with pytest.raises(ValueError, match="scale must be positive"):
        label_ceiling([_halves()], 2, [2], scale=0)
    with pytest.raises(ValueError, match="no label maps"):
        label_ceiling([], 2, [2])


def test_command_on_real_camvid(camvid_root, capsys):
    from zoo.commands.benchmark import main
    main(["--label-ceiling", "recipes/deconvnet_resnet10t_camvid.yaml", "--strides", "32", "2",
          "--set", f"data.root={camvid_root}", "--set", "data.options.holdout=0001TP:8400-"])
    out = capsys.readouterr().out
    assert "camvid val (" in out and "frames scaled by 0.5" in out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| 32") or
            line.startswith("| 2 ")}
    miou = {k: float(v.split(" | ")[1]) for k, v in rows.items()}
    assert 0 < miou["32"] < miou["2"] <= 1
