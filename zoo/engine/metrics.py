"""Confusion-matrix segmentation metrics: mIoU, pixel accuracy, mean accuracy.

The definitions are those of FCN (Long, Shelhamer & Darrell, 2015, section 5)
and of the PASCAL VOC / Cityscapes benchmarks that PSPNet reports: with n_ij
the number of pixels of ground-truth class i predicted as j and t_i = sum_j n_ij,

    IoU_c     = n_cc / (t_c + sum_i n_ic - n_cc)
    pixel acc = sum_c n_cc / sum_c t_c
    mean acc  = mean_c n_cc / t_c

The matrix is accumulated over the whole data set (not averaged per image),
on the device the predictions live on, with one ``torch.bincount`` per batch.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from zoo.data.base import IGNORE_INDEX


def iou_from_confusion(cm: Tensor) -> Tensor:
    """Per-class IoU (float64) from a (K, K) matrix; NaN where the union is 0."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def accuracy_from_confusion(cm: Tensor) -> Tensor:
    """Per-class recall (float64) from a (K, K) matrix; NaN where the class has no pixels."""
    cm = cm.double()
    gt = cm.sum(1)
    return torch.where(gt > 0, cm.diag() / gt.clamp_min(1), torch.full_like(gt, math.nan))


def _nanmean(x: Tensor) -> float:
    x = x[~x.isnan()]
    return float(x.mean()) if x.numel() else math.nan


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix: rows ground truth, columns prediction.

    ``update`` skips pixels whose target is ``ignore_index`` or outside
    ``[0, K)`` (and predictions outside ``[0, K)``). When ``device`` is None the
    matrix moves to the device of the first batch it sees.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device=None):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._follow_input = device is None
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                                  device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if self._follow_input and self.matrix.device != target.device:
            self.matrix = self.matrix.to(target.device)
        k = self.num_classes
        pred = pred.to(target.device).long().flatten()
        target = target.long().flatten()
        valid = (target != self.ignore_index) & (target >= 0) & (target < k) & (pred >= 0) & (pred < k)
        counts = torch.bincount(target[valid] * k + pred[valid], minlength=k * k)
        self.matrix += counts.reshape(k, k).to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sums the matrix over processes; a no-op outside torch.distributed."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        """Metrics from the accumulated matrix.

        ``mIoU`` averages the IoU over the classes present, i.e. with a non-empty
        union (in the ground truth or in the prediction); a class absent from
        both gets ``None`` in ``per_class_iou`` and is left out of the mean.
        ``mean_acc`` averages recall over classes present in the ground truth.
        Keys of ``per_class_iou`` are ``class_names`` or ``"0"``, ``"1"``, ...
        Means over no classes at all are NaN.
        """
        k = self.num_classes
        names = [str(i) for i in range(k)] if class_names is None else list(class_names)
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for {k} classes")
        cm = self.matrix.cpu()
        iou = iou_from_confusion(cm)
        total = int(cm.sum())
        return {
            "mIoU": _nanmean(iou),
            "per_class_iou": {n: (None if math.isnan(v) else v) for n, v in zip(names, iou.tolist())},
            "pixel_acc": int(cm.diag().sum()) / total if total else math.nan,
            "mean_acc": _nanmean(accuracy_from_confusion(cm)),
            "num_pixels": total,
        }
