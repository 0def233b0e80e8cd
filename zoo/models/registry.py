"""Names -> builder functions, in timm's shape: a plain registry of architectures.

Architectures register their builder with `@register_model`, declaring beside it
the small arguments its tests and the export grid build it with
(`@register_model(tiny={"fc_channels": 16})`); presets bind defaults to one
(`register_preset("unet_resnet34", unet, encoder="resnet34")`) instead of copying a
builder per backbone. `build` refuses keywords the builder does not take, naming
the valid ones.

The table is `MODELS` (a `zoo.common.registry.Registry`), complete on first use:
zoo/models/__init__.py imports every architecture module, and Python runs it
before this module. Trained weights (zoo entries, `hf-hub:` repositories) are
not this module's: `zoo.create` (zoo/factory.py) reads them from `zoo.hub` and
builds their architectures here. Arrows run factory -> hub -> registry -> models.

Every architecture also takes `logit_bias` (one value per class, added to the
logits; see `zoo.models.base`), which `build` applies after the builder runs.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

from torch import nn

from zoo.common.registry import Registry, check_arguments

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", hint="zoo.list_models() lists all")
LOGIT_BIAS = "logit_bias"


def register_model(fn: Callable | None = None, *, name: str | None = None, tiny: dict | None = None, **info):
    """Register an architecture's builder under its function name (or `name`); usable as
    `@register_model` or `@register_model(tiny={...})`. `tiny`: the keyword arguments
    that make it small for tests and the export grid (`{}` when its defaults are small)."""
    def add(f: Callable) -> Callable:
        return MODELS.register(name or f.__name__, f, tiny=tiny, **info)
    return add if fn is None else add(fn)


def register_preset(name: str, builder: Callable, **defaults) -> None:
    """`name` builds `builder` with `defaults` (they stay overridable); its tiny arguments
    are the builder's."""
    arch = next((n for n, f in MODELS.items() if f is builder), getattr(builder, "__name__", None))
    tiny = MODELS.info(arch).get("tiny") if arch in MODELS else None
    MODELS.register(name, partial(builder, **defaults), tiny=tiny, preset_of=arch)


def architectures(presets: bool = True) -> list[str]:
    """Registered architectures, with their presets unless `presets=False` (no entries)."""
    return [n for n in MODELS.names() if presets or not MODELS.info(n).get("preset_of")]


def resolve_name(name: str) -> Callable[..., nn.Module]:
    """The builder registered as `name`; unknown names list the closest ones."""
    return MODELS.get(name)


def builder_params(name: str) -> dict[str, inspect.Parameter]:
    """Keyword parameters `build(name, ...)` accepts, with their defaults
    (a preset's bound values shown as defaults)."""
    builder = MODELS.get(name)
    fn, bound = (builder.func, builder.keywords) if isinstance(builder, partial) else (builder, {})
    params = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        params[p.name] = p.replace(default=bound[p.name]) if p.name in bound else p
    params.setdefault(LOGIT_BIAS, inspect.Parameter(LOGIT_BIAS, inspect.Parameter.KEYWORD_ONLY, default=None))
    return params


def build(name: str, kwargs: dict) -> nn.Module:
    """`name`'s builder called with `kwargs` (refused by name when it does not take one),
    `logit_bias` set on the model, and `model.config` enough to rebuild it. None values
    are passed as they are (`create` drops them)."""
    params = builder_params(name)
    check_arguments(name, kwargs, params)
    kwargs = dict(kwargs)
    bias = kwargs.pop(LOGIT_BIAS, None)
    model = MODELS.get(name)(**kwargs)
    if bias is not None:
        if not hasattr(model, "set_logit_bias"):
            raise ValueError(f"{name}: builds a {type(model).__name__}, which takes no logit_bias")
        default = params.get("num_classes")
        k = kwargs.get("num_classes", default.default if default is not None else len(bias))
        if len(bias) != k:
            raise ValueError(f"{name}: logit_bias has {len(bias)} values for {k} classes")
        model.set_logit_bias(bias)
        kwargs[LOGIT_BIAS] = [float(b) for b in bias]
    model.config = {"name": name, **kwargs}  # enough to rebuild it: zoo.create(**model.config)
    return model


def create(name: str, **kwargs) -> nn.Module:
    """The architecture (or preset) `name` with fresh weights; `None` keywords keep the
    defaults. `zoo.create` (zoo/factory.py) also builds entries and `hf-hub:` repositories."""
    return build(name, {k: v for k, v in kwargs.items() if v is not None})
