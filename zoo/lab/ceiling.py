"""How much of a dataset's labelling survives an output stride.

A head that upsamples only its deepest feature (DeconvNet or SegNet without the
encoder's switches, PSPNet, FCN-32s) can at best know, on its feature grid, what
fraction of each cell every class covers. `label_ceiling` gives it exactly that:
each label map is pooled to per-class fractions on the grid of an output stride
(the input the model sees, frame size times its eval scale, divided by the
stride), upsampled bilinearly to the label's size and scored by its argmax, as
evaluation scores logits. The mIoU it reaches is the ceiling of a decoder that
adds no detail from shallower features; a model above it has learned to draw
detail its bottleneck does not carry (convolutions after each step can), one far
below it is limited elsewhere.

    segzoo benchmark --label-ceiling recipes/deconvnet_resnet10t_camvid.yaml \\
        --set data.root=/data/camvid --set data.options.holdout=drives
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zoo.engine.metrics import ConfusionMatrix


def pooled_and_upsampled(label: torch.Tensor, num_classes: int, grid: tuple[int, int],
                         ignore_index: int) -> torch.Tensor:
    """(H, W) labels -> (H, W) argmax of their per-class fractions on ``grid`` (h, w),
    upsampled bilinearly (align_corners=False). A cell's fractions are among its labelled
    pixels; a cell with none holds zeros."""
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    onehot = F.one_hot(torch.where(valid, label, 0).long(), num_classes).permute(2, 0, 1).float()
    fractions = F.adaptive_avg_pool2d((onehot * valid)[None], grid)
    labelled = F.adaptive_avg_pool2d(valid[None, None].float(), grid)
    fractions = fractions / labelled.clamp_min(1e-12)  # among a cell's labelled pixels
    return F.interpolate(fractions, size=label.shape, mode="bilinear", align_corners=False)[0].argmax(0)


def label_ceiling(labels, num_classes: int, strides: Sequence[int], scale: float = 1.0,
                  ignore_index: int = 255, class_names=None) -> dict[int, dict]:
    """{stride: metrics} for label maps (an iterable of (H, W) integer tensors or arrays):
    each map pooled to the grid ``ceil(H * scale / stride) x ceil(W * scale / stride)``
    and scored as `pooled_and_upsampled` draws it (``ConfusionMatrix.compute``'s keys)."""
    if not strides or any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must be positive integers, got {list(strides)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    matrices = {int(s): ConfusionMatrix(num_classes, ignore_index) for s in strides}
    seen = 0
    for label in labels:
        label = torch.as_tensor(label).long()
        h, w = label.shape
        for s, cm in matrices.items():
            grid = (max(1, math.ceil(h * scale / s)), max(1, math.ceil(w * scale / s)))
            cm.update(pooled_and_upsampled(label, num_classes, grid, ignore_index), label)
        seen += 1
    if not seen:
        raise ValueError("label_ceiling: no label maps given")
    return {s: cm.compute(class_names) for s, cm in matrices.items()}


def recipe_ceiling(recipe, strides: Sequence[int], split: str | None = None) -> tuple[dict, dict]:
    """`label_ceiling` on a recipe's validation split (or ``split``) at its one eval scale:
    ({stride: metrics}, {"dataset", "split", "images", "scale"})."""
    from zoo.data import make_dataset
    scales = list(recipe.eval.scales or [1.0])
    if len(scales) != 1:
        raise ValueError(f"eval.scales {scales}: the ceiling needs the one scale the model sees")
    split = split or recipe.data.val_split
    dataset = make_dataset(recipe.data, split, train=False)
    names = getattr(dataset, "classes", None)
    labels = (torch.from_numpy(dataset.load(i)[1].astype("int64")) for i in range(len(dataset)))
    results = label_ceiling(labels, dataset.num_classes, strides, scales[0], dataset.ignore_index,
                            class_names=names)
    return results, {"dataset": recipe.data.dataset, "split": split, "images": len(dataset),
                     "scale": scales[0]}
