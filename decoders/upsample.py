"""Swappable upsamplers: one constructor shape, one call shape, one factory.

    up = make_upsampler(spec, in_channels, out_channels, scale)
    y = up(x, guide=None, indices=None, output_size=None)

`spec` is a registered name (`"bilinear"`), a mapping with a name and options
(`{"name": "pixelshuffle", "icnr": False}`), an `Upsampler` subclass or a
`functools.partial` of one (the way timm's `get_norm_layer` takes a name, a
class or a partial), or an importable `"package.module:Class"`. An upsampler
from outside the package is one `Upsampler` subclass, passed as a class or
registered with `@register_upsampler("name")` (or `@UPSAMPLERS.register("name")`:
`UPSAMPLERS` is a `zoo.common.registry.Registry`); it then runs in every head.

What an upsampler needs is declared by its class, and heads and the encoder
act on that declaration, never on names:
- `needs_switches`: the encoder's max-pool switches for every x2 step (the
  encoder captures them only when the chosen upsampler declares this);
- `needs_guide`: the encoder feature at the target resolution (the image at
  reduction 1), whose channel count the head passes as `guide_channels`.

Heads also pass context an upsampler may take by naming it in `__init__`:
`switch_channels` (per x2 step, coarse to fine), `guide_channels` and
`head_convolves` (the head follows the upsampler with its own convolutions,
so a method that leaves holes, unpooling, need not fill them itself, and a
resize need not project: it may keep its input's channels, and such heads
read `up.out_channels`). Other
context is dropped; options a user gives that the class does not take are
refused by name.

`scale` is a power of two. `output_size` pins the output's spatial size, so
odd input sizes never produce a silent off-by-one: transposed convolution
uses its `output_padding` where the target lies in reach and crops otherwise,
the others crop (bottom/right) the at most `scale - 1` extra pixels that
ceil division left.

This module holds the contract, the registry and the factory; the base class is in
`decoders/upsampler_base.py`, the basic methods below in `decoders/basic_upsamplers.py`.
Guided by the encoder too: guided_indexnet, a2u, freqfusion (`decoders/indexnet.py`, `a2u.py`, `freqfusion.py`).
Methods here (papers); content-aware ones are in `decoders/content_aware.py`
(carafe, dysample) and `decoders/guided.py` (fade, sapa: guided by the encoder):
- `transposed`: ConvTranspose2d, kernel 2s, stride s, padding s/2; initialised
  as bilinear interpolation when channels match (FCN, Long et al. 2015).
- `unpool`: max-unpooling with the encoder's own switches (DeconvNet, Noh et
  al. 2015; SegNet, Badrinarayanan et al. 2017). It needs a real max-pool at
  every x2 step and refuses to be built where the encoder has none.
- `guided_unpool`: unpooling with switches taken from the 2x2 maxima of the
  guide feature: not the papers' method, a sibling for encoders that do not
  max-pool (ResNet below its stem, EfficientNet, ConvNeXt, ViT).
- `bilinear`, `nearest`: resize, then a 1x1 convolution where channels differ
  (resize-convolution, Odena et al. 2016), none where the head's 3x3
  convolutions follow.
- `pixelshuffle`: convolution to out*s^2 channels, then PixelShuffle (ESPCN,
  Shi et al. 2016) with ICNR initialisation (Aitken et al. 2017).
"""
from __future__ import annotations

import importlib
import inspect
from functools import partial

from decoders.basic_upsamplers import (  # noqa: F401  (the basic methods, importable from here too)
    GuidedUnpoolUpsample,
    PixelShuffleUpsample,
    ResizeUpsample,
    TransposedUpsample,
    UnpoolUpsample,
    bilinear_kernel,
    guide_switches,
    icnr_,
    unpool,
)
from decoders.blocks import FeatureInfo, step_reductions
from decoders.upsampler_base import MissingSwitchesError, Project, Upsampler, project  # noqa: F401
from zoo.common.registry import Registry

# ----------------------------------------------------------------------------- registry

CONTEXT = ("switch_channels", "guide_channels", "head_convolves")


def _class_of(factory) -> type:
    return factory.func if isinstance(factory, partial) else factory


def _check_class(cls, where) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Upsampler)):
        raise TypeError(f"upsampler {where!r}: expected an Upsampler subclass or a partial of one, "
                        f"got {cls!r}")


UPSAMPLERS: Registry[type[Upsampler] | partial] = Registry(
    "upsampler", check=lambda name, factory: _check_class(_class_of(factory), name))


def register_upsampler(name: str, factory=None):
    """Register an `Upsampler` subclass (or a partial of one) under `name`;
    usable as a decorator. Names are unique."""
    return UPSAMPLERS.register(name, factory)


register_upsampler("transposed", TransposedUpsample)
register_upsampler("unpool", UnpoolUpsample)
register_upsampler("guided_unpool", GuidedUnpoolUpsample)
register_upsampler("bilinear", partial(ResizeUpsample, mode="bilinear"))
register_upsampler("nearest", partial(ResizeUpsample, mode="nearest"))
register_upsampler("pixelshuffle", PixelShuffleUpsample)


def _import(path: str):
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"upsampler {path!r}: cannot import it ({e})") from None
    return obj


def resolve_upsampler(spec) -> tuple[type[Upsampler] | partial, dict, str]:
    """(factory, options, display name) for any accepted spec."""
    options = {}
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"upsample {spec!r}: a mapping needs a 'name' (and options)")
        options = {k: v for k, v in spec.items() if k != "name"}
        spec = spec["name"]
    if isinstance(spec, str):
        if spec in UPSAMPLERS:
            return UPSAMPLERS.get(spec), options, spec
        if ":" in spec:
            factory = _import(spec)
            _check_class(_class_of(factory), spec)
            return factory, options, spec
        raise ValueError(UPSAMPLERS.unknown(spec, listing=f"choices: {', '.join(UPSAMPLERS)}, "
                                                          "or 'package.module:Class'"))
    _check_class(_class_of(spec), repr(spec))
    return spec, options, _class_of(spec).__name__


def upsampler_class(spec) -> type[Upsampler]:
    """The class behind a spec, whose declarations (needs_switches, needs_guide) heads read."""
    return _class_of(resolve_upsampler(spec)[0])


def check_upsampler(spec) -> None:
    resolve_upsampler(spec)


def spec_to_config(spec):
    """A JSON-able form of `spec` that `make_upsampler` accepts again (classes
    become their import path), for model configs and checkpoints."""
    if isinstance(spec, (str, dict)) or spec is None:
        return spec
    cls = _class_of(spec)
    path = f"{cls.__module__}:{cls.__qualname__}"
    kwargs = spec.keywords if isinstance(spec, partial) else {}
    return {"name": path, **kwargs} if kwargs else path


def make_upsampler(spec, in_channels: int, out_channels: int, scale: int, **context) -> Upsampler:
    factory, options, name = resolve_upsampler(spec)
    if scale == 1:
        up = Project(in_channels, out_channels)
        up.method = "project"
        return up
    params = inspect.signature(_class_of(factory).__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown or any(k in CONTEXT for k in options):
        valid = [k for k in params if k not in ("self", "in_channels", "out_channels", "scale")
                 and k not in CONTEXT and params[k].kind is not params[k].VAR_KEYWORD]
        raise ValueError(f"upsampler {name!r}: unknown option(s) {', '.join(unknown or options)}; "
                         f"valid: {', '.join(valid) or 'none'}")
    context = {k: v for k, v in context.items() if k in params or takes_any}
    up = factory(in_channels, out_channels, scale, **options, **context)
    up.method = name
    return up


def make_step(spec, in_channels: int, out_channels: int, from_reduction: int, to_reduction: int,
              info: FeatureInfo | None = None, *, head_convolves: bool = False) -> Upsampler:
    """The upsampler of one decoder step between two reductions, given what the
    encoder offers (`info`): switch channels per x2 step, the guide's channels."""
    scale = from_reduction // to_reduction
    context = {"head_convolves": head_convolves}
    if info is not None:
        context["switch_channels"] = info.switch_chain(from_reduction, to_reduction)
        context["guide_channels"] = info.guide_channels(to_reduction)
    try:
        up = make_upsampler(spec, in_channels, out_channels, scale, **context)
    except MissingSwitchesError as e:
        steps = step_reductions(from_reduction, to_reduction)
        need = [steps[k] for k in e.steps]
        have = ", ".join(f"/{r} ({src})" for r, src in sorted((info.switch_sources if info else {}).items()))
        raise ValueError(
            f"upsample=unpool: the x{scale} step from /{from_reduction} to /{to_reduction} needs "
            f"max-pool switches at {', '.join(f'/{r}' for r in need)}, but encoder "
            f"{getattr(info, 'name', '?')!r} has max-pool switches only at {have or 'no resolution'}. Use an encoder "
            "that max-pools there (vgg11_bn, vgg16_bn, ...), or upsample='guided_unpool' "
            "(switches from the guide feature's 2x2 maxima)") from None
    up.reductions = (from_reduction, to_reduction)
    return up
