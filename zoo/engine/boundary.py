"""Boundary-quality metrics for semantic segmentation: Boundary IoU and trimap mIoU.

**Boundary IoU** (Cheng, Girshick, Dollár, Berg & Kirillov, "Boundary IoU:
Improving Object-Centric Image Segmentation Evaluation", CVPR 2021). For class
c on one image (the per-object definition read per class, as semantic
segmentation has no instances), G is the ground-truth mask of c and G_d its inner boundary band:
the pixels of G within distance d of a pixel outside G, the image's outside
counting as outside G. The reference ``mask_to_boundary`` (boundary-iou-api)
computes it as ``G - erode(G)`` with ``cv2.erode`` by a 3x3 square, d
iterations, on a zero-padded mask; d iterations of a 3x3 square are one
(2d+1)x(2d+1) square, so the distance is the chessboard (L-infinity) one:

    G_d = {p in G : some q not in G (or outside the image) has max(|dy|, |dx|) <= d}

P_d likewise for the prediction, and

    Boundary IoU_c = sum_images |G_d ∩ P_d| / sum_images |G_d ∪ P_d|

(G_d is already inside G, so the paper's G_d ∩ G is G_d). The sums run over
the data set, as mIoU sums its confusion matrix. d is ``dilation_px`` or, per
image, ``max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` as the reference
rounds it (0.02 of the diagonal: 46 px on 1024x2048 Cityscapes).

Void: pixels whose ground truth is ``ignore_index`` (or outside [0, K)) belong
to no class in either map: the prediction there is replaced by "no class"
before P_d is formed, so predicting anything inside void changes nothing, and a
void region bounds a class's mask (its band runs along the void) the same way
in both maps. Void pixels are never counted. Predictions outside [0, K) are
"no class" too (they bound masks, and count nowhere).

**Trimap mIoU** (Kohli, Ladický & Torr, "Robust Higher Order Potentials",
IJCV 2009; DeepLab's trimap experiment, Chen et al. 2015/2018): the mIoU of the
pixels within w of a ground-truth class boundary,

    band = {p non-void : some non-void q with label(q) != label(p) has max(|dy|, |dx|) <= w}

i.e. w pixels on each side of the crack between two labels (a 2w-pixel-wide
strip across a straight boundary); void is neither a label nor a boundary, and
the image border is not a boundary. The band pixels fill a confusion matrix;
the IoU of each class follows ``metrics.py`` and the mean runs over classes
with a non-empty union inside the band.

Everything runs on the predictions' device with tensor ops: windowed max / min
of the label map (one pass finds every class's band at once), over a
(2d+1)-long window in O(log d) elementwise steps per axis.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from zoo.data.base import IGNORE_INDEX

from .metrics import iou_from_confusion


def dilation_from_ratio(height: int, width: int, ratio: float) -> int:
    """The reference's band width: ``max(1, round(ratio * image diagonal))``, half to even."""
    return max(1, int(round(ratio * math.sqrt(height ** 2 + width ** 2))))


def _window_reduce(x: Tensor, length: int, dim: int, op) -> Tensor:
    """``op`` (torch.maximum / minimum) over every run of ``length`` entries along ``dim``.

    Windows of 2^k entries are built by doubling, then two overlapping ones cover
    ``length``: O(log length) passes, where ``max_pool2d`` costs O(length) per pixel
    (a 93-pixel window on Cityscapes) and takes no integer tensors.
    """
    span, m = 1, x
    while 2 * span <= length:
        n = m.size(dim) - span
        m = op(m.narrow(dim, 0, n), m.narrow(dim, span, n))
        span *= 2
    out = x.size(dim) - length + 1
    return op(m.narrow(dim, 0, out), m.narrow(dim, length - span, out))


def _square_reduce(x: Tensor, radius: int, op, fill: int) -> Tensor:
    """``op`` over the (2r+1)x(2r+1) square around each pixel of (N, H, W) ``x``; ``fill`` outside."""
    x = F.pad(x, (radius, radius, radius, radius), value=fill)
    k = 2 * radius + 1
    return _window_reduce(_window_reduce(x, k, 1, op), k, 2, op)


def inner_boundary(labels: Tensor, distance: int) -> Tensor:
    """Bool (N, H, W): pixels within chessboard ``distance`` of a pixel with another
    label or of the image's outside, i.e. for every label c at once, mask_c minus its
    zero-padded erosion by a 3x3 square ``distance`` times (boundary-iou-api's
    ``mask_to_boundary``). ``labels`` are non-negative integers."""
    x = labels.to(torch.int32)
    # -1 outside: the image border bounds every mask, as the reference's zero padding does.
    return (_square_reduce(x, distance, torch.maximum, -1)
            != _square_reduce(x, distance, torch.minimum, -1))


def trimap_band(labels: Tensor, valid: Tensor, width: int) -> Tensor:
    """Bool (N, H, W): ``valid`` pixels within chessboard ``width`` of a ``valid`` pixel
    of another label. Invalid pixels and the outside are neutral (no boundary)."""
    x = labels.to(torch.int32)
    # -1 never wins a max and int32's largest never wins a min, so void drops out.
    top = torch.iinfo(torch.int32).max
    hi = _square_reduce(torch.where(valid, x, -1), width, torch.maximum, -1)
    lo = _square_reduce(torch.where(valid, x, top), width, torch.minimum, top)
    return valid & (hi != lo)


def _nanmean(x: Tensor) -> float:
    x = x[~x.isnan()]
    return float(x.mean()) if x.numel() else math.nan


def _per_class(values: Tensor, names: Sequence[str]) -> dict:
    return {n: (None if math.isnan(v) else v) for n, v in zip(names, values.tolist())}


class BoundaryMetrics:
    """Accumulates Boundary IoU and trimap counts (int64) batch by batch.

    ``update(pred, target)`` takes the same (N, H, W) class maps as
    ``ConfusionMatrix.update``; ``all_reduce`` sums the counts over processes;
    ``compute`` turns them into metrics. ``dilation_px`` fixes d in pixels,
    otherwise d follows each batch's image size through ``dilation_ratio``.
    When ``device`` is None the counts move to the device of the first batch.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, dilation_ratio: float = 0.02,
                 dilation_px: Optional[int] = None, trimap_width: int = 3, device=None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if dilation_px is None and not dilation_ratio > 0:
            raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
        if dilation_px is not None and (int(dilation_px) != dilation_px or dilation_px < 1):
            raise ValueError(f"dilation_px must be an integer >= 1, got {dilation_px}")
        if int(trimap_width) != trimap_width or trimap_width < 1:
            raise ValueError(f"trimap_width must be an integer >= 1, got {trimap_width}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.dilation_ratio = float(dilation_ratio)
        self.dilation_px = None if dilation_px is None else int(dilation_px)
        self.trimap_width = int(trimap_width)
        self._follow_input = device is None
        k = self.num_classes
        self.intersection = torch.zeros(k, dtype=torch.int64, device=device)
        self.union = torch.zeros(k, dtype=torch.int64, device=device)
        self.trimap = torch.zeros(k, k, dtype=torch.int64, device=device)
        self.distances_used: set = set()

    def reset(self) -> None:
        for t in (self.intersection, self.union, self.trimap):
            t.zero_()
        self.distances_used.clear()

    def distance_for(self, height: int, width: int) -> int:
        """d in pixels for an image of this size."""
        if self.dilation_px is not None:
            return self.dilation_px
        return dilation_from_ratio(height, width, self.dilation_ratio)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape or target.dim() != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                             "must both be (N, H, W)")
        if self._follow_input and self.union.device != target.device:
            self.intersection, self.union, self.trimap = (
                t.to(target.device) for t in (self.intersection, self.union, self.trimap))
        k = self.num_classes
        target = target.long()
        pred = pred.to(target.device).long()
        valid = (target != self.ignore_index) & (target >= 0) & (target < k)
        counted = valid & (pred >= 0) & (pred < k)
        # k is "no class": void in either map, and the prediction's out-of-range values.
        gt = torch.where(valid, target, k)
        pr = torch.where(counted, pred, k)

        d = self.distance_for(*target.shape[-2:])
        self.distances_used.add(d)
        g_band = inner_boundary(gt, d) & valid
        p_band = inner_boundary(pr, d) & counted
        both = g_band & p_band & (gt == pr)
        inter = torch.bincount(gt[both], minlength=k)
        g_count = torch.bincount(gt[g_band], minlength=k)
        p_count = torch.bincount(pr[p_band], minlength=k)
        self.intersection += inter.to(self.union.device)
        self.union += (g_count + p_count - inter).to(self.union.device)

        band = trimap_band(gt, valid, self.trimap_width) & counted
        cm = torch.bincount(gt[band] * k + pr[band], minlength=k * k).reshape(k, k)
        self.trimap += cm.to(self.trimap.device)

    def all_reduce(self) -> None:
        """Sums the counts over processes, and merges the d each one met (so every
        process reports the same ``dilation_px_used``); a no-op outside torch.distributed."""
        if dist.is_available() and dist.is_initialized():
            for t in (self.intersection, self.union, self.trimap):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
            seen = [None] * dist.get_world_size()
            dist.all_gather_object(seen, sorted(self.distances_used))
            self.distances_used = set().union(*map(set, seen))

    def boundary_iou(self) -> Tensor:
        """Per-class Boundary IoU (float64); NaN where the union is 0."""
        inter, union = self.intersection.cpu().double(), self.union.cpu().double()
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, math.nan))

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        """Metrics from the accumulated counts.

        A class absent from both maps (in the band, for the trimap) gets ``None``
        and stays out of the mean; a class only in the ground truth scores 0.
        Means over no classes are NaN. ``boundary_params`` records the
        definitions; ``dilation_px_used`` lists the d this process met.
        """
        k = self.num_classes
        names = [str(i) for i in range(k)] if class_names is None else list(class_names)
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for {k} classes")
        b_iou = self.boundary_iou()
        t_iou = iou_from_confusion(self.trimap.cpu())
        return {
            "boundary_iou": _nanmean(b_iou),
            "per_class_boundary_iou": _per_class(b_iou, names),
            "trimap_miou": _nanmean(t_iou),
            "per_class_trimap_iou": _per_class(t_iou, names),
            "boundary_params": {
                "dilation_ratio": None if self.dilation_px is not None else self.dilation_ratio,
                "dilation_px": self.dilation_px,
                "dilation_px_used": sorted(self.distances_used),
                "trimap_width": self.trimap_width,
                "distance": "chessboard",
                "trimap_pixels": int(self.trimap.sum()),
            },
        }
