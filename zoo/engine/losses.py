"""Segmentation losses and class-balancing weights.

- ``ce``: pixel-wise cross-entropy (FCN), optionally class-weighted.
- ``dice`` (V-Net, Milletari et al. 2016), ``lovasz`` (Lovasz-Softmax, Berman
  et al. 2018), ``focal`` (Lin et al. 2017): the implementations of
  segmentation_models_pytorch in multiclass mode. Note that smp's multiclass
  focal loss is a one-vs-rest sigmoid focal loss averaged over classes.
- Sums such as ``ce+dice`` or ``ce+lovasz``: any ``+``-joined terms.
- More terms: ``register_loss("name")`` on a function ``(ignore_index, weights) -> module``
  (``LOSSES`` is a ``zoo.common.registry.Registry``).
- An auxiliary head (PSPNet's deep supervision on stage 4, weight 0.4) adds
  ``aux_weight`` times the same criterion on the auxiliary logits.
- A batch without one labelled pixel (a crop of an unlabelled region) adds a
  zero, on every term: still a function of the logits, so that backward
  reaches every parameter with a zero gradient and DDP's all-reduce, which
  waits for every parameter's gradient, goes on.
- Median frequency balancing (Eigen & Fergus 2015, used by SegNet on CamVid):
  ``weight_c = median(freq) / freq_c`` with ``freq_c`` the pixels of class c
  over the pixels of the images in which c is present.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import Tensor, nn

from zoo.common.registry import Registry
from zoo.data.base import IGNORE_INDEX
from zoo.engine.data import spread

MULTICLASS = smp_losses.MULTICLASS_MODE


LossTerm = Callable[[int, Optional[Tensor]], nn.Module]  # (ignore_index, class weights or None) -> module

LOSSES: Registry[LossTerm] = Registry("loss")


def register_loss(name: str, term: LossTerm | None = None, *, class_weights: bool = True):
    """Register a loss term as `name` (a decorator when `term` is not given): a function
    `(ignore_index, weights)` returning a module called as `module(logits, target)` -> scalar,
    `weights` the K class weights (a tensor) or None. `class_weights=False`: it takes none,
    and asking for them with this term alone is an error. Recipes then name it in
    `train.loss`, alone or in a `+`-joined sum."""
    return LOSSES.register(name, term, class_weights=class_weights)


@register_loss("ce")
def _ce(ignore_index, weights):
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)


@register_loss("dice")
def _dice(ignore_index, weights):
    return smp_losses.DiceLoss(MULTICLASS, ignore_index=ignore_index,
                               class_weights=None if weights is None else weights.tolist())


@register_loss("focal")
def _focal(ignore_index, weights):
    return smp_losses.FocalLoss(MULTICLASS, ignore_index=ignore_index,
                                class_weights=None if weights is None else weights.tolist())


@register_loss("lovasz", class_weights=False)
def _lovasz(ignore_index, weights):
    # Lovasz-Softmax optimises the mean IoU directly; smp offers no class weights for it.
    return smp_losses.LovaszLoss(MULTICLASS, ignore_index=ignore_index)


def _resize_to(logits: Tensor, target: Tensor) -> Tensor:
    if logits.shape[-2:] == target.shape[-2:]:
        return logits
    return F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)


class SegLoss(nn.Module):
    """Sum of named terms on the main logits, plus ``aux_weight`` times the same on aux logits."""

    def __init__(self, terms: Dict[str, nn.Module], aux_weight: float = 0.0,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.aux_weight = float(aux_weight)
        self.ignore_index = ignore_index

    def criterion(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = _resize_to(logits, target)
        if not (target != self.ignore_index).any():
            # Mean-reduced terms divide by zero pixels (ce: NaN) or fail (lovasz): nothing
            # to learn here, yet the graph must reach every parameter (see the docstring).
            return logits.sum() * 0.0
        return sum(term(logits, target) for term in self.terms.values())

    def forward(self, logits: Tensor, target: Tensor, aux_logits: Optional[Tensor] = None) -> Tensor:
        loss = self.criterion(logits, target)
        if aux_logits is not None and self.aux_weight:
            loss = loss + self.aux_weight * self.criterion(aux_logits, target)
        return loss


def build_loss(name: str = "ce", *, num_classes: int, ignore_index: int = IGNORE_INDEX,
               class_weights=None, aux_weight: float = 0.0) -> SegLoss:
    """A loss called as ``loss(logits, target, aux_logits=None)`` -> scalar.

    ``name`` is one of `LOSSES` (``ce``, ``dice``, ``focal``, ``lovasz`` and those of
    `register_loss`) or a ``+``-joined sum of them. ``class_weights`` (K values) go to
    every term that takes them (ce, dice, focal); asking for them with terms that take
    none (``lovasz``) alone is an error.
    """
    parts = [p.strip() for p in str(name).split("+")]
    parts = [p if p in LOSSES else p.lower() for p in parts]
    unknown = [p for p in parts if p not in LOSSES]
    listing = (f"valid: {', '.join(LOSSES.names())}, "
               "or a '+'-joined sum of different ones such as 'ce+dice', 'ce+lovasz'")
    if unknown:
        raise ValueError(LOSSES.unknown(unknown[0], listing=listing) + (f" (in {name!r})" if len(parts) > 1 else ""))
    if len(set(parts)) != len(parts):
        raise ValueError(f"unknown loss {name!r}: a term repeats; {listing}")
    weights = None
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        if weights.numel() != num_classes:
            raise ValueError(f"{weights.numel()} class weights for {num_classes} classes")
        if not any(LOSSES.info(p)["class_weights"] for p in parts):
            raise ValueError(f"class_weights are not supported by the {name} loss")
    return SegLoss({p: LOSSES.get(p)(ignore_index, weights) for p in parts}, aux_weight, ignore_index)


def class_frequencies(dataset, num_classes: int, ignore_index: int = IGNORE_INDEX,
                      max_images: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """(counts, image_totals), both (K,) int64, from ``dataset.load(i) -> (image, mask, name)``.

    ``counts[c]``: labelled pixels of class c; ``image_totals[c]``: labelled (not
    ignored) pixels of the images in which c occurs. ``max_images`` reads that
    many images spread evenly over the data set.
    """
    indices = spread(len(dataset), max_images)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    image_totals = torch.zeros(num_classes, dtype=torch.int64)
    for i in indices:
        mask = torch.as_tensor(np.asarray(dataset.load(i)[1]), dtype=torch.int64).flatten()
        mask = mask[(mask != ignore_index) & (mask >= 0) & (mask < num_classes)]
        c = torch.bincount(mask, minlength=num_classes)
        counts += c
        image_totals[c > 0] += mask.numel()
    return counts, image_totals


def median_frequency_weights(counts: Tensor, image_totals: Tensor) -> Tensor:
    """SegNet's median frequency balancing: ``median(freq) / freq_c``, float32 (K,).

    ``freq_c = counts[c] / image_totals[c]``; the median is over classes that
    occur (the mean of the two middle values for an even count, as numpy's).
    Classes that never occur get weight 1.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    image_totals = torch.as_tensor(image_totals, dtype=torch.float64)
    present = counts > 0
    if not present.any():
        return torch.ones_like(counts, dtype=torch.float32)
    freq = counts[present] / image_totals[present]
    weights = torch.ones_like(counts)
    weights[present] = freq.quantile(0.5) / freq
    return weights.float()


# ----------------------------------------------------------------------------- from a recipe

def class_weights(recipe, dataset) -> torch.Tensor | None:
    """The loss's per-class weights, (K,) float32, or None: `train.class_weights` as
    given, or computed from the training `dataset` for "median_frequency"."""
    weights = recipe.train.class_weights
    if weights == "median_frequency":
        weights = median_frequency_weights(*class_frequencies(dataset, len(dataset.classes),
                                                              dataset.ignore_index))
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.numel() != len(dataset.classes):
            raise ValueError(f"train.class_weights has {weights.numel()} values for "
                             f"{len(dataset.classes)} classes")
    return weights


def build_criterion(recipe, dataset, device):
    """The recipe's loss (`train.loss`, class weights, aux weight) for `dataset`'s classes, on `device`."""
    t = recipe.train
    return build_loss(t.loss, num_classes=len(dataset.classes), ignore_index=dataset.ignore_index,
                      class_weights=class_weights(recipe, dataset), aux_weight=t.aux_weight).to(device)
