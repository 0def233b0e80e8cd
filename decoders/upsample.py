"""Swappable upsamplers: one constructor shape, one call shape, one factory.

    up = make_upsampler(spec, in_channels, out_channels, scale)
    y = up(x, guide=None, indices=None, output_size=None)

`spec` is a registered name (`"bilinear"`), a mapping with a name and options
(`{"name": "pixelshuffle", "icnr": False}`), an `Upsampler` subclass or a
`functools.partial` of one (the way timm's `get_norm_layer` takes a name, a
class or a partial), or an importable `"package.module:Class"`. An upsampler
from outside the package is one `Upsampler` subclass, passed as a class or
registered with `@register_upsampler("name")`; it then runs in every head.

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

import difflib
import importlib
import inspect
import math
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import FeatureInfo, fit_to_size, stage_sizes, step_reductions


class Upsampler(nn.Module):
    """Base class: maps (N, in_channels, h, w) to (N, out_channels, ~h*scale, ~w*scale)."""

    needs_switches: ClassVar[bool] = False
    needs_guide: ClassVar[bool] = False

    def __init__(self, in_channels: int, out_channels: int, scale: int):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"upsampling scale must be a power of two, got {scale}")
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        self.method = type(self).__name__       # the spec's name, set by make_upsampler
        self.reductions: tuple[int, int] | None = None  # (from, to), set by make_step

    def target(self, x: Tensor, output_size) -> tuple[int, int]:
        if output_size is not None:  # no int(): keeps sizes symbolic for dynamic-shape export
            return output_size[0], output_size[1]
        return x.shape[-2] * self.scale, x.shape[-1] * self.scale

    def describe(self, info: FeatureInfo) -> str:
        """What this step reads besides its input, for `model.upsampling()`."""
        if self.needs_guide and self.reductions:
            r = self.reductions[1]
            return "guide: " + ("the input image" if r == 1 and r not in info.reductions
                                else f"encoder feature at /{r}")
        return ""

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, scale={self.scale}"


class Project(Upsampler):
    """Scale 1 (levels a dilated encoder keeps at one resolution): a 1x1
    projection where channel counts differ, nothing otherwise."""

    def __init__(self, in_channels, out_channels, scale=1):
        super().__init__(in_channels, out_channels, scale)
        self.proj = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x, guide=None, indices=None, output_size=None):
        return fit_to_size(self.proj(x), self.target(x, output_size))


def project(in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1 convolution to `out_channels`, or nothing where the counts already match."""
    return nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)


# ----------------------------------------------------------------------------- transposed

def bilinear_kernel(scale: int) -> Tensor:
    """The (2s, 2s) kernel with which a stride-s transposed convolution
    (padding s/2) equals bilinear interpolation with align_corners=False."""
    k = 2 * scale
    center = scale - 0.5
    t = 1 - (torch.arange(k, dtype=torch.float64) - center).abs() / scale
    return (t[:, None] * t[None, :]).float()


class TransposedUpsample(Upsampler):
    def __init__(self, in_channels, out_channels, scale, init: str = "auto"):
        super().__init__(in_channels, out_channels, scale)
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 2 * scale, stride=scale,
                                       padding=scale // 2)
        if init not in ("auto", "bilinear", "default"):
            raise ValueError(f"transposed init must be auto, bilinear or default, got {init!r}")
        if init == "bilinear" or (init == "auto" and in_channels == out_channels):
            self.reset_bilinear()

    @torch.no_grad()
    def reset_bilinear(self):
        """Each input channel i maps to output channel i through the bilinear kernel."""
        self.conv.weight.zero_()
        kernel = bilinear_kernel(self.scale)
        for c in range(min(self.in_channels, self.out_channels)):
            self.conv.weight[c, c] = kernel
        self.conv.bias.zero_()

    def forward(self, x, guide=None, indices=None, output_size=None):
        th, tw = self.target(x, output_size)
        # Natural size is h*s; output_padding reaches h*s .. h*s + s - 1. At or
        # below h*s a crop is exact (and exports with dynamic sizes).
        h, w = x.shape[-2] * self.scale, x.shape[-1] * self.scale
        if th <= h and tw <= w:
            return fit_to_size(self.conv(x), (th, tw))
        if th < h + self.scale and tw < w + self.scale:
            return self.conv(x, output_size=[max(th, h), max(tw, w)])[..., :th, :tw]
        return fit_to_size(self.conv(x), (th, tw))


# ----------------------------------------------------------------------------- unpooling

class MissingSwitchesError(ValueError):
    """An unpooling step without encoder switches; `steps` are the x2 steps (0-based) lacking them."""

    def __init__(self, steps: list[int]):
        super().__init__(f"unpool needs the encoder's max-pool switches for x2 step(s) {steps}")
        self.steps = steps


def unpool(x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """Max-unpooling: x's values at the switch positions of a (size) plane,
    zeros elsewhere. `indices` may have one channel (shared by all).

    Overlapping pools (ResNet's 3x3 / stride 2 stem) send several windows to
    one position; that position keeps the largest of their values. The rule is
    an order-free reduction, so the result is the same on every device and run
    (MaxUnpool2d keeps whichever write lands last, which differs on CUDA)."""
    n, c = x.shape[:2]
    if indices.shape[-2:] != x.shape[-2:] or indices.shape[1] not in (1, c):
        raise ValueError(f"unpool switches of shape {tuple(indices.shape)} do not fit "
                         f"features of shape {tuple(x.shape)}")
    flat_idx = indices.flatten(2).expand(n, c, -1)
    out = x.new_zeros(n, c, size[0] * size[1])
    out = out.scatter_reduce(2, flat_idx, x.flatten(2), reduce="amax", include_self=False)
    return out.view(n, c, size[0], size[1])


def _steps(scale: int) -> int:
    return int(math.log2(scale))


def _chain(x_steps: int, indices) -> list:
    chain = [indices] if isinstance(indices, Tensor) else list(indices or [])
    return chain if len(chain) == x_steps else [None] * x_steps


class UnpoolUpsample(Upsampler):
    """log2(scale) steps of x2 max-unpooling with the encoder's own switches.

    The input is projected (1x1) to the first switches' channel count where it
    differs; a 3x3 convolution follows every step but the last, mapping to the
    next switches' channels (without it three steps would leave 63 of every 64
    pixels at zero). After the last step a 3x3 convolution to `out_channels`
    makes the map dense, unless `head_convolves` (U-Net, DeconvNet, SegNet:
    their own 3x3 convolutions follow, as the papers' deconvolution layers
    follow unpooling); then only a 1x1 projection where channels differ.
    """

    needs_switches = True

    def __init__(self, in_channels, out_channels, scale, switch_channels=None,
                 head_convolves: bool = False):
        super().__init__(in_channels, out_channels, scale)
        steps = _steps(scale)
        if switch_channels is None:  # used on its own: switches as wide as the input
            switch_channels = [in_channels] * steps
        chain = [switch_channels] if isinstance(switch_channels, int) else list(switch_channels)
        missing = [k for k, c in enumerate(chain) if c is None]
        if missing or len(chain) != steps:
            raise MissingSwitchesError(missing or list(range(steps)))
        self.project = project(in_channels, chain[0])
        convs = [nn.Conv2d(chain[k], chain[k + 1], 3, padding=1) for k in range(steps - 1)]
        convs.append(project(chain[-1], out_channels) if head_convolves
                     else nn.Conv2d(chain[-1], out_channels, 3, padding=1))
        self.convs = nn.ModuleList(convs)

    def forward(self, x, guide=None, indices=None, output_size=None):
        steps = len(self.convs)
        chain = _chain(steps, indices)
        if any(i is None for i in chain):
            raise ValueError(f"unpool needs the encoder's max-pool switches for each of its {steps} "
                             "x2 step(s) (indices: a tensor, or a list coarse to fine); use "
                             "guided_unpool to derive them from a guide feature instead")
        target = self.target(x, output_size)
        x = self.project(x)
        for k, (idx, conv) in enumerate(zip(chain, self.convs)):
            # A step's plane is what the next step's switches were pooled from.
            size = chain[k + 1].shape[-2:] if k + 1 < steps else target
            # Encoders that floor odd sizes (VGG's pools) leave x a pixel short: the switches decide.
            x = conv(unpool(fit_to_size(x, idx.shape[-2:]), idx, size))
        return x

    def describe(self, info: FeatureInfo) -> str:
        if not self.reductions:
            return "switches: given"
        sources = [info.switch_sources.get(r, "?") for r in step_reductions(*self.reductions)]
        return "switches: encoder max-pool " + ", ".join(sources)


def guide_switches(guide: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
    """Switches for successive x2 unpooling steps whose outputs have `sizes`
    (coarse to fine), taken from a guide feature at the finest size.

    The guide is reduced to one saliency map (mean absolute activation over
    channels) and max-pooled 2x2 (ceil mode, as encoders downsample)
    repeatedly; each level's indices say where, inside every 2x2 window, the
    encoder responded most. One spatial switch is shared by all channels, so
    any channel count can be unpooled with any guide.
    """
    g = guide.detach().abs().mean(1, keepdim=True)
    switches = []
    for size in reversed(sizes):
        g = fit_to_size(g, size)
        g, idx = F.max_pool2d(g, 2, 2, ceil_mode=True, return_indices=True)
        switches.append(idx)
    return switches[::-1]


class GuidedUnpoolUpsample(Upsampler):
    """Unpooling whose switches come from the guide's 2x2 maxima (`guide_switches`),
    not from an encoder max-pool: a method of this zoo for encoders without
    max-pools, named apart from `unpool` so results are not mistaken for
    DeconvNet's. A 1x1 projection to `out_channels` first where channels
    differ, a 3x3 convolution after every step but the last, and after the last
    unless `head_convolves`."""

    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, head_convolves: bool = False):
        super().__init__(in_channels, out_channels, scale)
        steps = _steps(scale)
        self.project = project(in_channels, out_channels)
        convs = [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(steps - 1)]
        convs.append(nn.Identity() if head_convolves
                     else nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.convs = nn.ModuleList(convs)

    def forward(self, x, guide=None, indices=None, output_size=None):
        if guide is None:
            raise ValueError("guided_unpool needs a guide feature at the target resolution")
        sizes = stage_sizes(self.target(x, output_size), len(self.convs))
        x = self.project(x)
        for idx, size, conv in zip(guide_switches(guide, sizes), sizes, self.convs):
            x = conv(unpool(fit_to_size(x, idx.shape[-2:]), idx, size))
        return x

    def describe(self, info: FeatureInfo) -> str:
        return super().describe(info).replace("guide:", "switches: 2x2 maxima of") if self.reductions \
            else "switches: 2x2 maxima of the guide"


# ----------------------------------------------------------------------------- resize, sub-pixel

class ResizeUpsample(Upsampler):
    """Resize, then a 1x1 convolution where channel counts differ.

    A 1x1 convolution commutes with bilinear and nearest resizing (both act
    on each channel alone, linearly), so it runs before the resize, at the
    low resolution: the same function at a fraction of the cost. With
    matching channels it is the plain resize PSPNet and FCN apply to logits.

    Where the head convolves next (`head_convolves`: U-Net, DeconvNet) there
    is no projection: the resized feature keeps all its channels
    (`out_channels` becomes `in_channels`) and the head's 3x3 convolution
    reads them, as smp's U-Net does. A linear 1x1 map in front of that
    convolution factors it and slowed learning: U-Net/ResNet-18 from scratch
    on CamVid, training loss over iterations 51-100 0.682 with it, 0.639
    without (smp 0.668; `segzoo benchmark --learning`, docs/parity/README.md).
    """

    def __init__(self, in_channels, out_channels, scale, mode: str = "bilinear",
                 head_convolves: bool = False):
        if head_convolves:
            out_channels = in_channels
        super().__init__(in_channels, out_channels, scale)
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"resize mode must be bilinear or nearest, got {mode!r}")
        self.mode = mode
        self.proj = project(in_channels, out_channels)

    def forward(self, x, guide=None, indices=None, output_size=None):
        # By the scale, then crop, as every other method: resizing straight to an
        # `output_size` that is not a multiple would stretch the feature against
        # the encoder's grid (23 rows to 180 is x7.83, off by up to half a pixel).
        align = False if self.mode == "bilinear" else None
        y = F.interpolate(self.proj(x), scale_factor=self.scale, mode=self.mode, align_corners=align)
        return fit_to_size(y, self.target(x, output_size))


def icnr_(weight: Tensor, scale: int, init=nn.init.kaiming_normal_) -> Tensor:
    """ICNR: initialise one sub-kernel per output channel and repeat it for
    all scale^2 sub-pixel positions (PixelShuffle puts channel c*s^2 + k at
    position k of output channel c)."""
    out_c = weight.shape[0] // scale ** 2
    base = torch.empty(out_c, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    init(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(scale ** 2, dim=0))
    return weight


class PixelShuffleUpsample(Upsampler):
    def __init__(self, in_channels, out_channels, scale, icnr: bool = True):
        super().__init__(in_channels, out_channels, scale)
        self.conv = nn.Conv2d(in_channels, out_channels * scale ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if icnr:
            icnr_(self.conv.weight, scale)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x, guide=None, indices=None, output_size=None):
        return fit_to_size(self.shuffle(self.conv(x)), self.target(x, output_size))


# ----------------------------------------------------------------------------- registry

UPSAMPLERS: dict[str, type[Upsampler] | partial] = {
    "transposed": TransposedUpsample,
    "unpool": UnpoolUpsample,
    "guided_unpool": GuidedUnpoolUpsample,
    "bilinear": partial(ResizeUpsample, mode="bilinear"),
    "nearest": partial(ResizeUpsample, mode="nearest"),
    "pixelshuffle": PixelShuffleUpsample,
}

CONTEXT = ("switch_channels", "guide_channels", "head_convolves")


def register_upsampler(name: str, factory=None):
    """Register an `Upsampler` subclass (or a partial of one) under `name`;
    usable as a decorator. Names are unique."""
    def add(f):
        if name in UPSAMPLERS:
            raise ValueError(f"upsampler {name!r} is already registered")
        _check_class(_class_of(f), name)
        UPSAMPLERS[name] = f
        return f
    return add if factory is None else add(factory)


def _class_of(factory) -> type:
    return factory.func if isinstance(factory, partial) else factory


def _check_class(cls, where) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Upsampler)):
        raise TypeError(f"upsampler {where!r}: expected an Upsampler subclass or a partial of one, "
                        f"got {cls!r}")


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
            return UPSAMPLERS[spec], options, spec
        if ":" in spec:
            factory = _import(spec)
            _check_class(_class_of(factory), spec)
            return factory, options, spec
        close = difflib.get_close_matches(spec, UPSAMPLERS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown upsampler {spec!r}{hint} Choices: {', '.join(UPSAMPLERS)}, "
                         "or 'package.module:Class'")
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
