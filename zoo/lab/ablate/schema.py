"""The ablation file's schema (see `grid.py` for the format): pydantic models,
worded by `zoo.engine.recipe_errors` as recipes are, so every problem is one
line naming the file and the key path."""
from __future__ import annotations

import re
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from decoders.upsample import check_upsampler
from zoo.engine.recipe import RecipeError
from zoo.models.registry import resolve_name


class AblationError(RecipeError):
    """An ablation file that cannot be used; the message names the file and the key."""


def _none_as(empty):
    return BeforeValidator(lambda v: empty() if v is None else v)


def _distinct(values: list) -> list:
    labels = [upsampler_label(v) if isinstance(v, dict) else v for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate entries in {labels}")
    return values


def _architecture(name: str) -> str:
    resolve_name(name)  # an unknown name: a ValueError naming the close ones
    return name


def _upsampler(spec):
    if not (isinstance(spec, str) or (isinstance(spec, dict) and isinstance(spec.get("name"), str))):
        raise ValueError(f"expected an upsampler name or a mapping with a name and options, got {spec!r}")
    check_upsampler(spec)
    return spec


def _axis(item) -> Any:
    """A grid axis: a non-empty list of distinct values; null takes the base recipe's value."""
    return Optional[Annotated[list[item], Field(min_length=1), AfterValidator(_distinct)]]


def _non_empty(text: str) -> str:
    if not text:
        raise ValueError("expected a non-empty string")
    return text


def _lower(names: list[str]) -> list[str]:
    return _distinct([n.lower() for n in names])


Mapping = Annotated[dict, _none_as(dict)]
PosInt = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # YAML gives real types


class Grid(_Strict):
    architectures: _axis(Annotated[str, AfterValidator(_architecture)]) = None
    upsamplers: _axis(Annotated[Any, AfterValidator(_upsampler)]) = None
    encoders: _axis(str) = None
    seeds: _axis(int) = None


class ReportConfig(_Strict):
    num_images: PosInt = 4             # val images in the qualitative grid
    thin_classes: Annotated[list[str], _none_as(list), AfterValidator(_lower)] = []  # zoom centres
    checkerboard_images: PosInt = 8    # first K val images whose logits are scored
    latency_runs: PosInt = 10          # timed forwards (batch 1) after warm-up
    reference: Annotated[Any, AfterValidator(_upsampler)] = "bilinear"  # what the paired comparisons are against
    target_half_width: Annotated[float, Field(gt=0)] = 0.015  # interval half-width the seed count is sized for

    @property
    def reference_label(self) -> str:
        return upsampler_label(self.reference)


class AblationFile(_Strict):
    """An ablation file as written (the format: `zoo.lab.ablate.grid`)."""
    name: Optional[Annotated[str, AfterValidator(_non_empty)]] = None
    base: Annotated[str, AfterValidator(_non_empty)]  # a recipe, relative to the file, else to the cwd
    overrides: Mapping = {}
    grid: Annotated[Grid, _none_as(dict)] = Field(default_factory=Grid)
    arch_overrides: Annotated[dict[str, Mapping], _none_as(dict)] = {}
    report: Annotated[ReportConfig, _none_as(dict)] = Field(default_factory=ReportConfig)


def upsampler_label(spec) -> str:
    """A grid upsampler's name in cells, tables and plots: the name, then each
    option as `key_value` (booleans on/off), e.g. `pixelshuffle-icnr_off`."""
    if not isinstance(spec, dict):
        return str(spec)

    def value(v):
        return ("on" if v else "off") if isinstance(v, bool) else slug(str(v)).strip("_")
    return "-".join([str(spec["name"])] + [f"{k}_{value(v)}" for k, v in spec.items() if k != "name"])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)
