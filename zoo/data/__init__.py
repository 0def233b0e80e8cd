"""Datasets for semantic segmentation: one module per format, one contract.

`build_dataset(name, root, split, transform=None, **options)` builds any of
`DATASETS`; every dataset is a `SegDataset` (see `zoo.data.base`) yielding
train ids 0..K-1 with 255 = ignore. `build_transform` (albumentations, imported
lazily) makes the matching augmentation pipelines.
"""
from __future__ import annotations

import difflib
import inspect

from .base import IMAGENET_MEAN, IMAGENET_STD, DataError, SegDataset
from .camvid import CamVid
from .cityscapes import Cityscapes
from .coco import COCOSegmentation
from .folder import FolderDataset
from .palettes import colorize, make_palette
from .synthetic import SyntheticScenes
from .transforms import build_transform
from .voc import VOCSegmentation

DATASETS: dict[str, type[SegDataset]] = {
    "voc": VOCSegmentation,
    "cityscapes": Cityscapes,
    "camvid": CamVid,
    "coco": COCOSegmentation,
    "folder": FolderDataset,
    "synthetic": SyntheticScenes,
}


def dataset_options(name: str) -> list[str]:
    """The keyword options `build_dataset(name, ...)` accepts."""
    params = inspect.signature(_dataset_class(name).__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


def _dataset_class(name: str) -> type[SegDataset]:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=3, cutoff=0.4)
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return DATASETS[name]


def build_dataset(name: str, root, split: str, transform=None, **options) -> SegDataset:
    """Build dataset `name` ("voc", "cityscapes", "camvid", "coco", "folder", "synthetic")."""
    cls = _dataset_class(name)
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(dataset_options(name)) or 'none'}")
    return cls(root, split, transform, **options)


__all__ = [
    "DATASETS", "build_dataset", "dataset_options", "build_transform", "SegDataset", "DataError",
    "VOCSegmentation", "Cityscapes", "CamVid", "COCOSegmentation", "FolderDataset", "SyntheticScenes",
    "colorize", "make_palette", "IMAGENET_MEAN", "IMAGENET_STD",
]
