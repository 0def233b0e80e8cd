"""The built-in upsamplers without content-aware kernels: fixed-kernel resizing and
unpooling, and the learned transposed and sub-pixel convolutions. decoders/upsample.py
registers them (`transposed`, `unpool`, `guided_unpool`, `bilinear`, `nearest`,
`pixelshuffle`); what each is and where it comes from is in its docstring.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import FeatureInfo, fit_to_size, stage_sizes, step_reductions
from decoders.upsampler_base import MissingSwitchesError, Upsampler, project

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
