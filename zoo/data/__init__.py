"""Datasets for semantic segmentation: one module per format, one contract.

`build_dataset(name, root, split, transform=None, **options)` builds any of
`DATASETS`; every dataset is a `SegDataset` (see `zoo.data.base`) yielding
train ids 0..K-1 with `IGNORE_INDEX` (255) = ignore. `build_transform` (albumentations, imported
lazily) makes the matching augmentation pipelines; `make_dataset` builds
both from a recipe's `data` section.
"""
from __future__ import annotations

import inspect

from .base import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DataError, SegDataset, resolve_root
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
        from zoo.names import did_you_mean
        hint = did_you_mean(name, DATASETS)
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}"
                         + (f" ({hint})" if hint else ""))
    return DATASETS[name]


def build_dataset(name: str, root, split: str, transform=None, **options) -> SegDataset:
    """Build dataset `name` ("voc", "cityscapes", "camvid", "coco", "folder", "synthetic")."""
    cls = _dataset_class(name)
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(dataset_options(name)) or 'none'}")
    return cls(root, split, transform, **options)


def make_dataset(data, split: str, train: bool):
    """The recipe's dataset for `split` with its transform, its root resolved
    (`resolve_root`: the current folder or $ZOO_DATA). Its `ignore_index` is
    `data.ignore_index` when set, else the dataset's own; the transform pads
    crops with it and relabels the dataset's own unlabelled value to it."""
    dataset = build_dataset(data.dataset, resolve_root(data.root), split, **data.options)
    native = dataset.ignore_index
    if data.ignore_index is not None:
        dataset.ignore_index = data.ignore_index
    entries = data.train_transforms if train else data.val_transforms
    dataset.transform = build_transform(entries, train=train, family=data.dataset,
                                        crop_size=tuple(data.crop_size) if data.crop_size else None,
                                        mean=data.mean, std=data.std, ignore_index=dataset.ignore_index,
                                        relabel={native: dataset.ignore_index})
    return dataset


__all__ = [
    "DATASETS", "build_dataset", "dataset_options", "build_transform", "make_dataset", "IGNORE_INDEX",
    "SegDataset", "DataError",
    "VOCSegmentation", "Cityscapes", "CamVid", "COCOSegmentation", "FolderDataset", "SyntheticScenes",
    "colorize", "make_palette", "IMAGENET_MEAN", "IMAGENET_STD",
]
