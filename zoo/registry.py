"""Names -> builder functions, in timm's shape.

Architectures register their builder with `@register_model`; presets bind
defaults to one (`register_preset("unet_resnet34", unet, encoder="resnet34")`)
instead of copying a builder per backbone. `create` drops `None` keywords, so
unset options keep the model's defaults, and refuses keywords the builder does
not take, naming the valid ones.

Names with trained weights (zoo entries, `hf-hub:` repositories) are served by
`zoo.hub`, which sits above the registry: it plugs itself in with
`register_weights`, and `create`, `resolve_name` and `list_models` ask it first.
The registry imports no hub; arrows run hub -> registry -> models.

Every architecture also takes `logit_bias` (one value per class, added to the
logits; see `zoo.models.base`), which `build` applies after the builder runs.
"""
from __future__ import annotations

import fnmatch
import inspect
from functools import partial
from typing import Callable, Iterable, Protocol

from torch import nn

from zoo.names import did_you_mean

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable) -> Callable:
    name = fn.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = fn
    return fn


def register_preset(name: str, builder: Callable, **defaults) -> None:
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = partial(builder, **defaults)


class WeightsSource(Protocol):
    """What serves names with trained weights (zoo.hub)."""

    def names(self) -> Iterable[str]: ...  # entry names

    def arch(self, name: str) -> str | None: ...  # the architecture an entry builds, None if not an entry

    def create(self, name: str | None, pretrained: bool | str, **kwargs) -> nn.Module: ...


_WEIGHTS: list[WeightsSource] = []


def register_weights(source: WeightsSource) -> None:
    _WEIGHTS.append(source)


def _entries() -> list[str]:
    return [n for source in _WEIGHTS for n in source.names()]


def _entry_arch(name: str) -> str | None:
    return next((a for source in _WEIGHTS if (a := source.arch(name)) is not None), None)


def architectures() -> list[str]:
    """Registered architectures and presets (no entries)."""
    _load_models()
    return sorted(_BUILDERS)


def resolve_name(name: str) -> Callable[..., nn.Module]:
    """The builder registered as `name` (for an entry: its architecture's); unknown
    names list the closest ones."""
    _load_models()
    if name in _BUILDERS:
        return _BUILDERS[name]
    arch = _entry_arch(name)
    if arch is not None:
        return _BUILDERS[arch]
    names = list(_BUILDERS) + _entries()
    hint = did_you_mean(name, names, n=4)
    raise ValueError(f"unknown model {name!r}{'; ' + hint if hint else ''} (zoo.list_models() lists all)")


def builder_params(name: str) -> dict[str, inspect.Parameter]:
    """Keyword parameters `create(name, ...)` accepts, with their defaults
    (a preset's bound values shown as defaults)."""
    builder = resolve_name(name)
    fn, bound = (builder.func, builder.keywords) if isinstance(builder, partial) else (builder, {})
    params = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        params[p.name] = p.replace(default=bound[p.name]) if p.name in bound else p
    params.setdefault(LOGIT_BIAS, inspect.Parameter(LOGIT_BIAS, inspect.Parameter.KEYWORD_ONLY, default=None))
    return params


LOGIT_BIAS = "logit_bias"


def build(name: str, kwargs: dict) -> nn.Module:
    """`name`'s builder called with `kwargs` (already checked against `builder_params`),
    `logit_bias` set on the model, and `model.config` enough to rebuild it."""
    kwargs = dict(kwargs)
    bias = kwargs.pop(LOGIT_BIAS, None)
    model = resolve_name(name)(**kwargs)
    if bias is not None:
        if not hasattr(model, "set_logit_bias"):
            raise ValueError(f"{name}: builds a {type(model).__name__}, which takes no logit_bias")
        default = builder_params(name).get("num_classes")
        k = kwargs.get("num_classes", default.default if default is not None else len(bias))
        if len(bias) != k:
            raise ValueError(f"{name}: logit_bias has {len(bias)} values for {k} classes")
        model.set_logit_bias(bias)
        kwargs[LOGIT_BIAS] = [float(b) for b in bias]
    model.config = {"name": name, **kwargs}  # enough to rebuild it: create(**model.config)
    return model


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style pattern; with `pretrained=True`
    only zoo entries that carry trained weights."""
    _load_models()
    names = _entries() if pretrained else list(_BUILDERS) + _entries()
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def create(name: str | None = None, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered model. `None` keywords keep the defaults.

    `pretrained=True` loads the trained weights of the entry (or `hf-hub:` repository)
    `name` names; other keywords may change its architecture (`num_classes=5` to fine-tune),
    and the tensors that no longer fit are left fresh and named in a warning. A recipe's
    `model.pretrained: <entry>` passes the entry's name instead: the model `name` builds
    (the entry itself when `name` is not given) starts from that entry's weights."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained or name is None or name.startswith("hf-hub:") or _entry_arch(name) is not None:
        if not _WEIGHTS:
            raise ValueError(f"create({name!r}, pretrained={pretrained!r}): no source of trained weights "
                             "is registered (import zoo.hub)")
        return _WEIGHTS[0].create(name, pretrained, **kwargs)
    params = builder_params(name)
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(params)}")
    return build(name, kwargs)


def _load_models() -> None:
    import zoo.models  # noqa: F401  (registers the architectures on import)
