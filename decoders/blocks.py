"""Small building blocks shared by every decoder head.

One conv-norm-act block (norm and activation layers by name, class or
partial, through timm's layer factories), the spatial-size bookkeeping that
lets every head produce exactly the input's size, what heads know about an
encoder before it runs (`FeatureInfo`: plain numbers) and what they receive
when it has run (`EncoderOutput`).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn


def norm_factory(norm_layer):
    """A callable `channels -> nn.Module` for `norm_layer`: a name timm knows
    ("batchnorm", "groupnorm", "layernorm2d", ...), a class, a partial, or
    None / "none" for no normalisation. GroupNorm takes the largest group
    count <= 32 that divides the channels, so narrow heads work too."""
    if norm_layer is None or norm_layer == "none":
        return None
    if isinstance(norm_layer, str):
        from timm.layers import get_norm_layer
        try:
            norm_layer = get_norm_layer(norm_layer)
        except KeyError:
            raise ValueError(f"unknown norm_layer {norm_layer!r}; use a timm name (batchnorm, "
                             "groupnorm, layernorm2d, ...), a class, a partial or 'none'") from None
    cls = getattr(norm_layer, "func", norm_layer)
    if cls is nn.GroupNorm:
        return lambda c: norm_layer(math.gcd(32, c), c)
    if isinstance(cls, type) and issubclass(cls, nn.GroupNorm) and "num_groups" in \
            inspect.signature(cls.__init__).parameters:
        return lambda c: norm_layer(c, num_groups=math.gcd(32, c))  # timm's GroupNorm
    return norm_layer


def act_factory(act_layer):
    """A callable `() -> nn.Module` for `act_layer` (name, class, partial or None)."""
    if act_layer is None or act_layer == "none":
        return None
    if isinstance(act_layer, str):
        from timm.layers import get_act_layer
        name = act_layer
        try:
            act_layer = get_act_layer(name)
        except (KeyError, ValueError):
            act_layer = None
        if act_layer is None:
            raise ValueError(f"unknown act_layer {name!r}; use a timm name (relu, gelu, silu, ...), a class, "
                             "a partial or 'none'")
    return act_layer


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation. The convolution has a bias only without a
    norm layer. `transposed=True` uses a stride-1 ConvTranspose2d, as
    DeconvNet's deconvolution layers do."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, transposed: bool = False, norm_layer="batchnorm",
                 act_layer="relu"):
        padding = dilation * (kernel_size - 1) // 2
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        norm, act = norm_factory(norm_layer), act_factory(act_layer)
        conv = conv_cls(in_channels, out_channels, kernel_size, padding=padding,
                        dilation=dilation, bias=norm is None)
        # He initialisation (normal, fan-in), as U-Net's paper prescribes: PyTorch's default
        # (uniform with a = sqrt(5)) starts the decoder about sqrt(3) times too small, and the
        # learning-parity benchmark against smp measured it (zoo/lab/parity.py, docs/parity/README.md).
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers = [conv]
        if norm is not None:
            layers.append(norm(out_channels))
        if act is not None:
            layers.append(_inplace(act))
        super().__init__(*layers)


def _inplace(act):
    try:
        return act(inplace=True)
    except TypeError:  # activations without an inplace flag (GELU, ...)
        return act()


def fit_to_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop (bottom/right) or replicate-pad `x` to `size`.

    Encoders downsample with ceil division, so an upsampled map is at most
    `scale - 1` pixels larger than its target; the extra rows and columns lie
    past the image's bottom/right edge and are cropped. Padding covers encoders
    that floor instead.
    """
    th, tw = size
    x = x[..., :th, :tw]  # slicing past the end is a no-op: no branch on sizes (export)
    pad_h, pad_w = th - x.shape[-2], tw - x.shape[-1]
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def stage_sizes(size: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Target sizes of `stages` successive x2 steps ending at `size`
    (coarse to fine), using the ceil division encoders apply on the way down."""
    h, w = size
    # (h + n - 1) // n, not -(-h // n): ONNX's integer Div truncates toward zero
    return [((h + 2 ** k - 1) // 2 ** k, (w + 2 ** k - 1) // 2 ** k) for k in range(stages - 1, -1, -1)]


def step_reductions(from_reduction: int, to_reduction: int) -> list[int]:
    """The reductions each x2 step of an upsampling from `from_reduction` to
    `to_reduction` lands on, coarse to fine: (32, 4) -> [16, 8, 4]."""
    out, r = [], from_reduction
    while r > to_reduction:
        r //= 2
        out.append(r)
    return out


@dataclass(frozen=True)
class FeatureInfo:
    """What a head knows of its encoder when it is built: numbers only.

    `switch_channels` maps a reduction to the channel count of the max-pool
    switches that address it (the pool's input had that reduction);
    `switch_sources` names the encoder module each comes from. `pool_channels`
    / `pool_sources` do the same for max-pool outputs, by the reduction of the
    output (FCN takes its skips there: pool3, pool4).
    """

    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    in_chans: int = 3
    switch_channels: dict = field(default_factory=dict)
    switch_sources: dict = field(default_factory=dict)
    pool_channels: dict = field(default_factory=dict)
    pool_sources: dict = field(default_factory=dict)
    name: str = ""

    def guide_channels(self, reduction: int) -> int | None:
        """Channels of `EncoderOutput.guide(reduction)`."""
        for c, r in zip(reversed(self.channels), reversed(self.reductions)):
            if r == reduction:
                return c
        return self.in_chans if reduction == 1 else None

    def switch_chain(self, from_reduction: int, to_reduction: int) -> list:
        """Switch channels for each x2 step (None where the encoder has none)."""
        return [self.switch_channels.get(r) for r in step_reductions(from_reduction, to_reduction)]


@dataclass
class EncoderOutput:
    """What a decoder head receives: features with their reductions, max-pool
    switches keyed by the reduction they index into, max-pool outputs keyed by
    their own reduction, and the input image (the guide at reduction 1)."""

    features: list[Tensor]
    reductions: list[int]
    image: Tensor
    switches: dict[int, Tensor] = field(default_factory=dict)
    pooled: dict[int, Tensor] = field(default_factory=dict)

    def guide(self, reduction: int) -> Tensor | None:
        """The deepest encoder feature at `reduction` (the image at 1)."""
        for feat, r in zip(reversed(self.features), reversed(self.reductions)):
            if r == reduction:
                return feat
        return self.image if reduction == 1 else None

    def size(self, reduction: int) -> tuple[int, int]:
        g = self.guide(reduction)
        if g is not None:
            return tuple(g.shape[-2:])
        h, w = self.image.shape[-2:]
        return (h + reduction - 1) // reduction, (w + reduction - 1) // reduction  # ceil, export-safe

    def step(self, from_reduction: int, to_reduction: int) -> dict:
        """Keyword arguments of an upsampler call from one reduction to another:
        the guide and size at the target, and the switches of every x2 step
        (a list, coarse to fine; None where the encoder has none)."""
        chain = [self.switches.get(r) for r in step_reductions(from_reduction, to_reduction)]
        return {"guide": self.guide(to_reduction), "output_size": self.size(to_reduction),
                "indices": chain if any(i is not None for i in chain) else None}
