"""The dataset registry: names -> `SegDataset` classes, each with its augmentation family.

    from zoo.data import SegDataset, register_dataset

    @register_dataset("leaves", family="natural")   # family: else the class's `family`
    class Leaves(SegDataset): ...

The built-in formats are registered by zoo/data/__init__.py (Python runs it before
this module, so the table is complete on first use). A dataset's family picks the
default training augmentation (`zoo.data.transforms`); it is declared on the class
(`SegDataset.family`, "natural" unless a class says otherwise) or at registration.
"""
from __future__ import annotations

from zoo.common.registry import Registry

from .base import SegDataset


def _check(name: str, cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, SegDataset)):
        raise TypeError(f"dataset {name!r}: expected a SegDataset subclass, got {cls!r}")


DATASETS: Registry[type[SegDataset]] = Registry("dataset", check=_check)


def register_dataset(name: str, cls: type[SegDataset] | None = None, *, family: str | None = None):
    """Register a `SegDataset` subclass as `name` (a decorator when `cls` is not given);
    `family` overrides the class's augmentation family."""
    info = {} if family is None else {"family": family}
    return DATASETS.register(name, cls, **info)


def dataset_family(name: str) -> str:
    """The augmentation family of the dataset registered as `name`."""
    return DATASETS.info(name).get("family") or DATASETS.get(name).family
