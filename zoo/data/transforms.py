"""Albumentations pipelines (Buslaev et al., "Albumentations: fast and flexible
image augmentations", Information 2020) built from recipe entries.

`build_transform(entries, train=..., family=..., crop_size=..., mean=..., std=...)`
returns an `albumentations.Compose` whose output is
`{"image": float32 tensor (3, H, W), "mask": int64 tensor (H, W)}`.

`entries` is a list of `{"name": <albumentations class>, "params": {...}}`; a
`params["transforms"]` list of entries is built recursively (OneOf, SomeOf,
Sequential). The pipeline always ends with Normalize(mean, std), the mask as
int64 (with `relabel`, e.g. `{255: 0}`, applied) and ToTensorV2, which the
entries must not repeat. With `entries=None` the defaults are:

- training, by the dataset's augmentation family (`family=` is a family or a registered
  dataset's name; a dataset declares its family, see zoo/data/registry.py):
  "natural": RandomScale 0.5-2.0, PadIfNeeded to `crop_size` (image 0, mask
  `ignore_index`), RandomCrop `crop_size`, HorizontalFlip, ColorJitter;
  "synthetic": HorizontalFlip only (plus pad/crop when `crop_size` is set).
  Without `crop_size` no crop is made, so images keep varying sizes. `crop_size`
  sizes these defaults only: a recipe that lists its own entries crops in them,
  and `zoo/engine/recipe.py` refuses `data.crop_size` beside `data.train_transforms`.
- evaluation: normalisation only, at full resolution.

albumentations is imported inside the functions: it takes seconds to import.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from zoo.common.names import did_you_mean

from .base import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from .registry import DATASETS, dataset_family

AUGMENTATION_FAMILIES = ("natural", "synthetic")  # the default training pipelines below
_APPENDED = ("Normalize", "ToTensorV2")


def _mask_to_int64(mask, relabel=(), **_):
    out = mask.astype(np.int64, copy=True if relabel else False)
    for old, new in relabel:
        out[mask == old] = new
    return out


def transform_names() -> list[str]:
    """Names of the albumentations transforms and composers `entries` may use."""
    import albumentations as A
    kinds = (A.BasicTransform, A.BaseCompose)
    return sorted(n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), kinds))


def make_transform(entry: dict, mask_fill: int | None = None):
    """One `{"name": ..., "params": {...}}` entry -> an albumentations transform. `mask_fill`:
    the mask value of pixels a geometric transform invents (padding, rotated corners) when the
    entry names no `fill_mask`; albumentations' own default, 0, is a class."""
    import albumentations as A
    if not isinstance(entry, dict) or "name" not in entry or set(entry) - {"name", "params"}:
        raise ValueError(f"transform entry must be {{'name': str, 'params': dict}}, got {entry!r}")
    name, params = entry["name"], dict(entry.get("params") or {})
    names = transform_names()
    if name not in names:
        hint = did_you_mean(name, names, n=5, cutoff=0.5) or f"known: {', '.join(names)}"
        raise ValueError(f"unknown albumentations transform {name!r}; {hint}")
    cls = getattr(A, name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(params) - accepted)
    if unknown:  # albumentations 2.x only warns about these
        raise ValueError(f"transform {name}: unknown parameter(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(sorted(accepted))}")
    if isinstance(params.get("transforms"), (list, tuple)):
        params["transforms"] = [make_transform(e, mask_fill) for e in params["transforms"]]
    if mask_fill is not None and "fill_mask" in accepted:
        params.setdefault("fill_mask", mask_fill)
    try:
        return cls(**params)
    except Exception as e:  # pydantic ValidationError (a ValueError), TypeError, ...
        detail = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()) \
            if hasattr(e, "errors") else " ".join(str(e).split())
        raise ValueError(f"transform {name}: invalid params {params!r}: {detail}") from None


def resolve_family(family: str) -> str:
    """The augmentation family `family` names: itself, or a registered dataset's family."""
    if family in AUGMENTATION_FAMILIES:
        return family
    if family in DATASETS:
        declared = dataset_family(family)
        if declared not in AUGMENTATION_FAMILIES:
            raise ValueError(f"dataset {family!r} declares augmentation family {declared!r}; "
                             f"known: {', '.join(AUGMENTATION_FAMILIES)}")
        return declared
    known = [*DATASETS, *AUGMENTATION_FAMILIES]
    hint = did_you_mean(family, known)
    raise ValueError(f"unknown dataset family {family!r}{'; ' + hint if hint else ''}; known: datasets "
                     f"{', '.join(DATASETS)}; families {', '.join(AUGMENTATION_FAMILIES)}")


def default_train_entries(family: str, crop_size: tuple[int, int] | None,
                          ignore_index: int = IGNORE_INDEX) -> list[dict]:
    family = resolve_family(family)
    entries = [] if family == "synthetic" else [
        {"name": "RandomScale", "params": {"scale_limit": (-0.5, 1.0), "p": 1.0}}]  # x0.5 .. x2.0
    if crop_size is not None:
        h, w = crop_size
        entries += [
            {"name": "PadIfNeeded", "params": {"min_height": h, "min_width": w, "border_mode": 0,
                                               "fill": 0, "fill_mask": ignore_index}},
            {"name": "RandomCrop", "params": {"height": h, "width": w}},
        ]
    entries.append({"name": "HorizontalFlip", "params": {"p": 0.5}})
    if family != "synthetic":
        entries.append({"name": "ColorJitter", "params": {"brightness": 0.25, "contrast": 0.25,
                                                          "saturation": 0.25, "hue": 0.03, "p": 0.8}})
    return entries


def build_transform(entries: list[dict] | None, *, train: bool, family: str,
                    crop_size: tuple[int, int] | None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    ignore_index: int = IGNORE_INDEX, relabel: dict[int, int] | None = None):
    """Recipe entries (or the family's defaults) + Normalize + int64 mask + ToTensorV2.

    `ignore_index` fills the mask where the default crops pad, and where any entry that
    takes `fill_mask` (PadIfNeeded, Rotate, Affine, ...) invents pixels without naming one;
    `relabel` maps mask values (a dataset's own unlabelled value to the one the run ignores)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    family = resolve_family(family)
    added = [e.get("name") for e in entries or [] if isinstance(e, dict) and e.get("name") in _APPENDED]
    if added:
        raise ValueError(f"transform entries must not include {', '.join(added)}: the pipeline always ends "
                         "with Normalize(mean, std) and ToTensorV2")
    if entries is None:
        entries = default_train_entries(family, tuple(crop_size) if crop_size else None, ignore_index) \
            if train else []
    steps = [make_transform(e, ignore_index) for e in entries]
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
              A.Lambda(name="mask_to_int64", mask=functools.partial(
                  _mask_to_int64, relabel=tuple((k, v) for k, v in (relabel or {}).items() if k != v))),
              ToTensorV2()]
    return A.Compose(steps)
