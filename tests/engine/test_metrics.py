"""ConfusionMatrix against a confusion matrix worked out by hand."""
import math

import pytest
import torch

from zoo.engine.metrics import ConfusionMatrix, iou_from_confusion

# Four classes; class 3 occurs in neither target nor prediction. The two 255
# pixels (predicted 1 and 3) and the out-of-range target 7 must be skipped.
TARGET = torch.tensor([[[0, 0, 0, 1, 1], [2, 2, 2, 255, 255]], [[7, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
PRED = torch.tensor([[[0, 0, 1, 1, 2], [2, 2, 0, 1, 3]], [[3, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
# Only the first image counts for the hand computation; the second adds 9 correct class-0 pixels.
#   rows = ground truth, columns = prediction
HAND = [[2 + 9, 1, 0, 0],
        [0, 1, 1, 0],
        [1, 0, 2, 0],
        [0, 0, 0, 0]]


def _filled(**kw):
    cm = ConfusionMatrix(4, **kw)
    cm.update(PRED[:1], TARGET[:1])
    cm.update(PRED[1:], TARGET[1:])   # accumulates over batches
    return cm


def test_matrix_matches_hand_count():
    cm = _filled()
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == HAND


def test_metrics_exact():
    m = _filled().compute(class_names=["sky", "road", "car", "boat"])
    # IoU = TP / (row + column - TP)
    iou = {"sky": 11 / (12 + 12 - 11), "road": 1 / (2 + 2 - 1), "car": 2 / (3 + 3 - 2), "boat": None}
    assert m["per_class_iou"] == pytest.approx(iou, abs=1e-15)
    assert m["per_class_iou"]["car"] == 0.5
    assert m["per_class_iou"]["boat"] is None
    # absent class excluded from the mean: 3 classes, not 4
    assert m["mIoU"] == pytest.approx((11 / 13 + 1 / 3 + 1 / 2) / 3, abs=1e-15)
    assert m["num_pixels"] == 17
    assert m["pixel_acc"] == pytest.approx(14 / 17, abs=1e-15)
    assert m["mean_acc"] == pytest.approx((11 / 12 + 1 / 2 + 2 / 3) / 3, abs=1e-15)


def test_default_names_and_errors():
    m = _filled().compute()
    assert list(m["per_class_iou"]) == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="2 class names for 4 classes"):
        _filled().compute(["a", "b"])
    with pytest.raises(ValueError, match="differ"):
        ConfusionMatrix(4).update(PRED, TARGET[:1])


def test_ignore_index_is_configurable():
    cm = ConfusionMatrix(4, ignore_index=0)
    cm.update(PRED[:1], TARGET[:1])
    assert cm.matrix[0].sum() == 0        # class-0 rows skipped, 255 now out of range
    assert cm.matrix.sum() == 5


def test_iou_helper_nan_for_empty_union_and_empty_matrix():
    iou = iou_from_confusion(torch.tensor(HAND))
    assert math.isnan(iou[3]) and iou[2] == 0.5
    m = ConfusionMatrix(2).compute()
    assert math.isnan(m["mIoU"]) and m["per_class_iou"] == {"0": None, "1": None}


def test_all_reduce_without_distributed_is_noop():
    cm = _filled()
    cm.all_reduce()
    assert cm.matrix.tolist() == HAND
    cm.reset()
    assert cm.matrix.sum() == 0
