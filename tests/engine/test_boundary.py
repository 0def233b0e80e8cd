"""Boundary IoU and trimap mIoU against bands and counts worked out by hand,
and against boundary-iou-api's cv2 definition on random masks."""
import math

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist

from zoo.engine.boundary import BoundaryMetrics, dilation_from_ratio, inner_boundary, trimap_band


def square(size=12, top=3, left=3, side=5, label=1):
    m = torch.zeros(1, size, size, dtype=torch.long)
    m[0, top:top + side, left:left + side] = label
    return m


def cv2_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """boundary-iou-api's mask_to_boundary with d given: mask minus its erosion by
    a 3x3 square, d iterations, on a mask zero-padded by one pixel."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return mask - eroded


# ----------------------------------------------------------------------------- bands

def test_square_band_by_hand_d1_and_d2():
    sq = square(size=7, top=1, left=1)                # 5x5 square, one background pixel around
    ring = torch.zeros(7, 7, dtype=torch.bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False                           # d=1: the square minus its 3x3 core
    band = inner_boundary(sq, 1)[0]
    assert torch.equal(band & (sq[0] == 1), ring)
    assert int(ring.sum()) == 25 - 9
    band2 = inner_boundary(sq, 2)[0]
    assert int((band2 & (sq[0] == 1)).sum()) == 25 - 1        # d=2: only the centre survives
    assert not band2[3, 3] and band2[2, 2]
    # every background pixel touches the border or the square
    assert bool(band[sq[0] == 0].all()) and bool(band2[sq[0] == 0].all())


def test_thin_line_is_all_boundary_for_any_d():
    line = torch.zeros(1, 12, 12, dtype=torch.long)
    line[0, 4, 2:10] = 2
    for d in (1, 3, 20):
        assert int((inner_boundary(line, d) & (line == 2)).sum()) == 8


@pytest.mark.parametrize("d", [1, 2, 5])
def test_band_equals_cv2_reference(d):
    g = torch.Generator().manual_seed(d)
    labels = torch.randint(0, 3, (2, 9, 13), generator=g)
    # smooth the noise into blobs so erosion keeps something
    labels = torch.nn.functional.interpolate(labels[:, None].float(), size=(23, 31))[:, 0].long()
    band = inner_boundary(labels, d)
    for n in range(2):
        for c in range(3):
            mask = (labels[n] == c).numpy().astype(np.uint8)
            expect = cv2_boundary(mask, d).astype(bool)
            assert np.array_equal(band[n].numpy() & mask.astype(bool), expect), (n, c)


def test_dilation_from_ratio_rounds_like_the_reference():
    assert dilation_from_ratio(1024, 2048, 0.02) == 46          # 45.79
    assert dilation_from_ratio(12, 12, 0.02) == 1               # 0.34, clamped to 1
    assert dilation_from_ratio(300, 400, 0.01) == 5             # exactly 5.0
    assert dilation_from_ratio(30, 40, 0.05) == 2               # 2.5 rounds half to even


# ----------------------------------------------------------------------------- Boundary IoU

def _metrics(pred, target, **kw):
    kw.setdefault("num_classes", 2)
    bm = BoundaryMetrics(**kw)
    bm.update(pred, target)
    return bm


@pytest.mark.parametrize("kw", [{"dilation_px": 1}, {}])    # 12x12 at ratio 0.02 gives d=1 too
def test_shifted_square_by_hand(kw):
    gt, pred = square(), square(left=4)               # prediction one pixel to the right
    bm = _metrics(pred, gt, **kw)
    # square rings (16 px each) share rows 3 and 7 over cols 4..7: 8 px
    # background bands: image border (44) + the ring around each square (24); they share
    # the border and rows 2 and 8 over cols 3..8 (12)
    assert bm.intersection.tolist() == [44 + 12, 8]
    assert bm.union.tolist() == [68 + 68 - 56, 16 + 16 - 8]
    m = bm.compute(["bg", "sq"])
    assert m["per_class_boundary_iou"] == {"bg": 56 / 80, "sq": 8 / 24}
    assert m["boundary_iou"] == pytest.approx((0.7 + 1 / 3) / 2, abs=1e-15)
    assert m["boundary_params"]["dilation_px_used"] == [1]
    assert m["boundary_params"]["distance"] == "chessboard"


def test_perfect_prediction_is_one():
    gt = square()
    gt[0, 9:11, 1:11] = 2
    m = _metrics(gt.clone(), gt, num_classes=3, dilation_px=2).compute()
    assert m["per_class_boundary_iou"] == {"0": 1.0, "1": 1.0, "2": 1.0}
    assert m["boundary_iou"] == 1.0 and m["trimap_miou"] == 1.0


def test_empty_and_missed_classes():
    gt = square()
    gt[0, 10, 2:10] = 2                               # a thin line, entirely boundary
    pred = square()                                   # misses the line
    m = _metrics(pred, gt, num_classes=4, dilation_px=1).compute()
    iou = m["per_class_boundary_iou"]
    assert iou["1"] == 1.0 and iou["2"] == 0.0        # in the ground truth only: 0
    assert iou["3"] is None                           # in neither: left out of the mean
    assert m["boundary_iou"] == pytest.approx((iou["0"] + 1.0 + 0.0) / 3, abs=1e-15)
    line = _metrics(gt.clone().roll(1, 1), gt, num_classes=4, dilation_px=1)
    assert line.intersection[2] == 0 and line.union[2] == 16   # 8 + 8, no overlap


def test_void_is_not_counted_and_predictions_inside_void_do_not_hurt():
    gt = torch.zeros(1, 8, 8, dtype=torch.long)
    gt[0, :, 3:5] = 255
    gt[0, :, 5:] = 1
    pred = gt.clone()
    pred[0, :, 3:5] = 1                               # widens class 1 into the void
    bm = _metrics(pred, gt, dilation_px=1)
    # each side is 3 columns x 8 rows; only the middle column's rows 1..6 are inside
    assert bm.union.tolist() == [24 - 6, 24 - 6]
    assert bm.intersection.tolist() == [18, 18]
    assert bm.compute()["boundary_iou"] == 1.0
    # the same with ignore_index moved: 255 is now out of range, still void
    assert _metrics(pred, gt, dilation_px=1, ignore_index=-1).union.tolist() == [18, 18]


def test_out_of_range_prediction_is_no_class():
    gt = square()
    pred = gt.clone()
    pred[0, 5, 5] = 9                                 # a hole in the square's core
    bm = _metrics(pred, gt, dilation_px=1)
    # the hole's 8 neighbours become boundary of the predicted square; the hole counts nowhere
    assert bm.union.tolist()[1] == 16 + 8
    assert bm.intersection.tolist()[1] == 16


# ----------------------------------------------------------------------------- trimap

def halves(width=10, split=5):
    m = torch.zeros(1, 10, width, dtype=torch.long)
    m[0, :, split:] = 1
    return m


def test_trimap_band_two_regions_by_hand():
    gt = halves()
    valid = torch.ones_like(gt, dtype=torch.bool)
    for w, cols in ((1, [4, 5]), (2, [3, 4, 5, 6]), (3, [2, 3, 4, 5, 6, 7])):
        band = trimap_band(gt, valid, w)[0]
        assert band.any(0).nonzero().flatten().tolist() == cols
        assert int(band.sum()) == 10 * 2 * w


def test_trimap_miou_by_hand():
    gt, pred = halves(), halves(split=6)              # column 5 predicted as class 0
    m = _metrics(pred, gt, trimap_width=2).compute()
    # band cols 3..6: n00 = 20, n10 = 10, n11 = 10
    assert m["boundary_params"]["trimap_pixels"] == 40
    assert m["per_class_trimap_iou"] == {"0": 20 / 30, "1": 10 / 20}
    assert m["trimap_miou"] == pytest.approx(7 / 12, abs=1e-15)


def test_trimap_ignores_void_and_the_image_border():
    gt = halves()
    gt[0, :, 4:6] = 255                               # void strip between the regions
    valid = gt != 255
    assert not trimap_band(gt, valid, 2).any()        # class 1 is 3 columns away
    band = trimap_band(gt, valid, 3)[0]
    assert band.any(0).nonzero().flatten().tolist() == [3, 6]
    m = _metrics(torch.zeros_like(gt), torch.zeros_like(gt)).compute()
    assert m["per_class_trimap_iou"] == {"0": None, "1": None}
    assert math.isnan(m["trimap_miou"]) and m["boundary_iou"] == 1.0


@pytest.mark.parametrize("w", [1, 2, 4])
def test_trimap_band_equals_brute_force(w):
    g = torch.Generator().manual_seed(w)
    gt = torch.randint(0, 4, (2, 11, 9), generator=g)
    gt[gt == 3] = 255
    valid = gt != 255
    expect = torch.zeros_like(valid)
    h, wd = gt.shape[-2:]
    for dy in range(-w, w + 1):
        for dx in range(-w, w + 1):
            sy, sx = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), wd + min(dx, 0))
            ty, tx = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), wd + min(-dx, 0))
            other = valid[:, sy, sx] & (gt[:, sy, sx] != gt[:, ty, tx])
            expect[:, ty, tx] |= other
    assert torch.equal(trimap_band(gt, valid, w), expect & valid)


# ----------------------------------------------------------------------------- accumulation

def _random_pair(seed, n=4, h=16, w=20, k=3):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n, h // 4, w // 4), generator=g)
    target = target.repeat_interleave(4, 1).repeat_interleave(4, 2)
    target[:, :2, :3] = 255
    pred = torch.where(torch.rand(n, h, w, generator=g) < 0.1,
                       torch.randint(0, k, (n, h, w), generator=g), target)
    return pred, target


def test_batches_accumulate_like_one_pass():
    pred, target = _random_pair(0)
    one = _metrics(pred, target, num_classes=3, dilation_px=2)
    many = BoundaryMetrics(3, dilation_px=2)
    for i in range(4):
        many.update(pred[i:i + 1], target[i:i + 1])
    for a, b in ((one.intersection, many.intersection), (one.union, many.union),
                 (one.trimap, many.trimap)):
        assert a.dtype == torch.int64 and torch.equal(a, b)
    assert one.compute() == many.compute()


def test_counts_equal_cv2_reference_per_image():
    pred, target = _random_pair(1, k=3)
    bm = _metrics(pred, target, num_classes=3, dilation_px=2)
    inter, union = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for t, p in zip(target.numpy(), pred.numpy()):
        valid = t != 255
        for c in range(3):
            gb = cv2_boundary(((t == c) & valid).astype(np.uint8), 2).astype(bool)
            pb = cv2_boundary(((p == c) & valid).astype(np.uint8), 2).astype(bool)
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    assert bm.intersection.tolist() == inter.tolist() and bm.union.tolist() == union.tolist()


def test_ratio_follows_each_image_size():
    bm = BoundaryMetrics(2)
    bm.update(square(), square())
    bm.update(torch.zeros(1, 60, 80, dtype=torch.long), torch.zeros(1, 60, 80, dtype=torch.long))
    assert bm.compute()["boundary_params"]["dilation_px_used"] == [1, 2]   # 0.34 -> 1, 2.0
    bm.reset()
    assert bm.union.sum() == 0 and bm.compute()["boundary_params"]["dilation_px_used"] == []


def test_all_reduce_single_process():
    pred, target = _random_pair(2)
    bm = _metrics(pred, target, num_classes=3)
    before = [t.clone() for t in (bm.intersection, bm.union, bm.trimap)]
    bm.all_reduce()                                   # outside torch.distributed: a no-op
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        bm.all_reduce()                               # one process: the sum is itself
    finally:
        dist.destroy_process_group()
    for a, b in zip(before, (bm.intersection, bm.union, bm.trimap)):
        assert torch.equal(a, b)


def test_errors_name_the_value():
    with pytest.raises(ValueError, match=r"must both be \(N, H, W\)"):
        BoundaryMetrics(2).update(square(), square()[0])
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        BoundaryMetrics(3).compute(["a", "b"])
    with pytest.raises(ValueError, match="dilation_px must be an integer >= 1, got 0"):
        BoundaryMetrics(2, dilation_px=0)
    with pytest.raises(ValueError, match="dilation_ratio must be > 0, got -0.1"):
        BoundaryMetrics(2, dilation_ratio=-0.1)
    with pytest.raises(ValueError, match="trimap_width must be an integer >= 1, got 1.5"):
        BoundaryMetrics(2, trimap_width=1.5)
