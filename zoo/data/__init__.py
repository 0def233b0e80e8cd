"""Datasets for semantic segmentation: one module per format, one contract.

`build_dataset(name, root, split, transform=None, **options)` builds any of
`DATASETS` (a `zoo.common.registry.Registry`; `register_dataset` adds one, with its
augmentation family: see zoo/data/registry.py); every dataset is a `SegDataset` (see `zoo.data.base`) yielding
train ids 0..K-1 with `IGNORE_INDEX` (255) = ignore. `build_transform` (albumentations, imported
lazily) makes the matching augmentation pipelines; `make_dataset` builds
both from a recipe's `data` section.
"""
from __future__ import annotations

import inspect

from .ade20k import ADE20K
from .base import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DataError, SegDataset, resolve_root
from .camvid import CamVid
from .cityscapes import Cityscapes
from .coco import COCOSegmentation
from .folder import FolderDataset
from .palettes import colorize, make_palette
from .registry import DATASETS, dataset_family, register_dataset
from .synthetic import SyntheticScenes
from .transforms import build_transform
from .voc import VOCSegmentation

register_dataset("voc", VOCSegmentation)
register_dataset("cityscapes", Cityscapes)
register_dataset("camvid", CamVid)
register_dataset("coco", COCOSegmentation)
register_dataset("folder", FolderDataset)
register_dataset("ade20k", ADE20K)
register_dataset("synthetic", SyntheticScenes)  # family "synthetic", declared on the class


def dataset_options(name: str) -> list[str]:
    """The keyword options `build_dataset(name, ...)` accepts."""
    params = inspect.signature(_dataset_class(name).__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


def _dataset_class(name: str) -> type[SegDataset]:
    return DATASETS.get(name)  # an unknown name: a ValueError naming the close ones


def build_dataset(name: str, root, split: str, transform=None, **options) -> SegDataset:
    """Build dataset `name` ("voc", "cityscapes", "camvid", "coco", "ade20k", "folder", "synthetic", or one
    registered with `register_dataset`)."""
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
    dataset.transform = build_transform(entries, train=train, family=dataset_family(data.dataset),
                                        crop_size=tuple(data.crop_size) if data.crop_size else None,
                                        mean=data.mean, std=data.std, ignore_index=dataset.ignore_index,
                                        relabel={native: dataset.ignore_index})
    return dataset


__all__ = [
    "DATASETS", "register_dataset", "dataset_family",
    "build_dataset", "dataset_options", "build_transform", "make_dataset", "IGNORE_INDEX",
    "SegDataset", "DataError",
    "VOCSegmentation", "Cityscapes", "CamVid", "COCOSegmentation", "ADE20K", "FolderDataset", "SyntheticScenes",
    "colorize", "make_palette", "IMAGENET_MEAN", "IMAGENET_STD",
]
