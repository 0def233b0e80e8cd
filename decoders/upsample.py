"""Swappable upsamplers: one constructor shape, one call shape.

    up = make_upsampler(name, in_channels, out_channels, scale)
    y = up(x, guide=None, indices=None, output_size=None)

`scale` is a power of two. `output_size` pins the output's spatial size, so odd
input sizes never produce a silent off-by-one: transposed convolution uses its
`output_padding` where the target lies in reach and crops otherwise, the others
crop (bottom/right) the at most `scale - 1` extra pixels ceil-division left.

Methods (papers):
- `transposed`: ConvTranspose2d, kernel 2s, stride s, padding s/2; initialised
  as bilinear interpolation when channels match (FCN, Long et al. 2015).
- `unpool`: max-unpooling with switches, then a 3x3 convolution (DeconvNet,
  Noh et al. 2015; SegNet). True switches come from an encoder max-pool; where
  there is none, from `guide` (see `guide_switches`).
- `bilinear`, `nearest`: resize, then a 1x1 convolution where channels differ
  (resize-convolution, Odena et al. 2016; the heads' 3x3 convolutions follow).
- `pixelshuffle`: convolution to out*s^2 channels, then PixelShuffle (ESPCN,
  Shi et al. 2016) with ICNR initialisation (Aitken et al. 2017).
- `carafe`: content-aware reassembly of features (Wang et al. 2019).
- `dysample`: learned point sampling with grid_sample (Liu et al. 2023),
  bilinear upsampling at initialisation.

A new upsampler is one `Upsampler` subclass plus one line in `UPSAMPLERS`.
"""
from __future__ import annotations

import difflib
import inspect
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import fit_to_size, stage_sizes


class Upsampler(nn.Module):
    """Base class: maps (N, in_channels, h, w) to (N, out_channels, ~h*scale, ~w*scale)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"upsampling scale must be a power of two, got {scale}")
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale

    def target(self, x: Tensor, output_size) -> tuple[int, int]:
        if output_size is not None:  # no int(): keeps sizes symbolic for dynamic-shape export
            return output_size[0], output_size[1]
        return x.shape[-2] * self.scale, x.shape[-1] * self.scale

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


def unpool(x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """Max-unpooling: x's values at the switch positions of a (size) plane,
    zeros elsewhere. `indices` may have one channel (shared by all)."""
    n, c = x.shape[:2]
    if indices.shape[-2:] != x.shape[-2:] or indices.shape[1] not in (1, c):
        raise ValueError(f"unpool switches of shape {tuple(indices.shape)} do not fit "
                         f"features of shape {tuple(x.shape)}")
    flat_idx = indices.flatten(2).expand(n, c, -1)
    out = x.new_zeros(n, c, size[0] * size[1])
    return out.scatter(2, flat_idx, x.flatten(2)).view(n, c, *size)


class UnpoolUpsample(Upsampler):
    """log2(scale) steps of x2 unpooling, each followed by a 3x3 convolution
    (DeconvNet convolves after every unpooling: without it three steps would
    leave 63 of every 64 pixels at zero).

    `indices` (true max-pool switches) serve the last step; every other step
    takes its switches from `guide`. `switch_channels` is the channel count of
    the true switches: the input is projected to it first when it differs.
    """

    def __init__(self, in_channels, out_channels, scale, switch_channels: int | None = None):
        super().__init__(in_channels, out_channels, scale)
        mid = switch_channels or in_channels
        steps = int(math.log2(scale))
        self.project = nn.Conv2d(in_channels, mid, 1) if mid != in_channels else nn.Identity()
        self.convs = nn.ModuleList(
            nn.Conv2d(mid, out_channels if k == steps - 1 else mid, 3, padding=1) for k in range(steps))

    def forward(self, x, guide=None, indices=None, output_size=None):
        steps = len(self.convs)
        sizes = stage_sizes(self.target(x, output_size), steps)  # output of each x2 step
        if guide is None and (indices is None or steps > 1):
            raise ValueError("unpool needs switches: pass indices (for the last x2 step) "
                             "or a guide feature at the target resolution")
        switches = guide_switches(guide, sizes) if guide is not None else [None] * steps
        if indices is not None:
            switches[-1] = indices
        x = self.project(x)
        for idx, size, conv in zip(switches, sizes, self.convs):
            # Encoders that floor odd sizes (VGG's pools) leave x one pixel short
            # of the ceil-mode guide switches; the switches decide.
            x = conv(unpool(fit_to_size(x, idx.shape[-2:]), idx, size))
        return x


class ResizeUpsample(Upsampler):
    """Resize, then a 1x1 convolution where channel counts differ.

    A 1x1 convolution commutes with bilinear and nearest resizing (both act
    on each channel alone, linearly), so it runs before the resize, at the
    low resolution: the same function at a fraction of the cost. Heads
    follow it with their own 3x3 convolutions; with matching channels it is
    the plain resize PSPNet and FCN apply to logits.
    """

    def __init__(self, in_channels, out_channels, scale, mode: str = "bilinear"):
        super().__init__(in_channels, out_channels, scale)
        self.mode = mode
        self.proj = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x, guide=None, indices=None, output_size=None):
        size = self.target(x, output_size)
        align = False if self.mode == "bilinear" else None
        return F.interpolate(self.proj(x), size=size, mode=self.mode, align_corners=align)


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


class CarafeUpsample(Upsampler):
    """CARAFE: each output pixel is a softmax-weighted sum over the k_up x k_up
    neighbourhood of its source pixel, the weights predicted from the content."""

    def __init__(self, in_channels, out_channels, scale, compressed: int = 64,
                 encoder_kernel: int = 3, up_kernel: int = 5):
        super().__init__(in_channels, out_channels, scale)
        mid = min(compressed, in_channels)
        self.k = up_kernel
        self.compress = nn.Conv2d(in_channels, mid, 1)
        self.encode = nn.Conv2d(mid, scale ** 2 * up_kernel ** 2, encoder_kernel,
                                padding=encoder_kernel // 2)
        nn.init.normal_(self.encode.weight, std=0.001)
        nn.init.zeros_(self.encode.bias)
        self.project = (nn.Identity() if in_channels == out_channels
                        else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        s, k2 = self.scale, self.k ** 2
        kernels = self.encode(self.compress(x)).view(n, s * s, k2, h, w).softmax(dim=2)
        feats = self.project(x)
        c = feats.shape[1]
        patches = F.unfold(feats, self.k, padding=self.k // 2).view(n, c, k2, h, w)
        out = torch.einsum("nckhw,nskhw->ncshw", patches, kernels).reshape(n, c * s * s, h, w)
        return fit_to_size(F.pixel_shuffle(out, s), self.target(x, output_size))


class DySampleUpsample(Upsampler):
    """DySample ("LP" style): per output pixel, a learned offset (scope 0.25
    of a source pixel) around the position bilinear interpolation would
    sample; grid_sample then reads the features there. Offsets start near zero,
    so at initialisation it is bilinear upsampling followed by a 1x1 projection."""

    def __init__(self, in_channels, out_channels, scale, groups: int = 4):
        super().__init__(in_channels, out_channels, scale)
        self.groups = groups if out_channels % groups == 0 else 1
        self.offset = nn.Conv2d(in_channels, 2 * self.groups * scale ** 2, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        self.project = (nn.Identity() if in_channels == out_channels
                        else nn.Conv2d(in_channels, out_channels, 1))
        # Sub-pixel position of each of the s*s outputs relative to its source
        # pixel centre, in source pixels; channel order (xy, group, phase).
        h = (torch.arange(scale) - (scale - 1) / 2) / scale
        grid_x = h.repeat(scale)              # phase i*s + j -> h[j]
        grid_y = h.repeat_interleave(scale)   # phase i*s + j -> h[i]
        pos = torch.stack([grid_x.repeat(self.groups), grid_y.repeat(self.groups)])
        self.register_buffer("init_pos", pos.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        s, g = self.scale, self.groups
        offset = self.offset(x) * 0.25 + self.init_pos          # (n, 2*g*s*s, h, w)
        ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
        xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
        base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
        norm = torch.tensor([w, h], device=x.device, dtype=x.dtype).view(1, 2, 1, 1, 1)
        coords = 2 * (base.view(1, 2, 1, h, w) + offset.view(n, 2, -1, h, w)) / norm - 1
        coords = F.pixel_shuffle(coords.reshape(n, -1, h, w), s)  # (n, 2g, sh, sw)
        grid = coords.view(n, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(n * g, s * h, s * w, 2)
        feats = self.project(x)
        feats = feats.reshape(n * g, -1, h, w)
        out = F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return fit_to_size(out.view(n, -1, s * h, s * w), self.target(x, output_size))


UPSAMPLERS = {
    "transposed": TransposedUpsample,
    "unpool": UnpoolUpsample,
    "bilinear": partial(ResizeUpsample, mode="bilinear"),
    "nearest": partial(ResizeUpsample, mode="nearest"),
    "pixelshuffle": PixelShuffleUpsample,
    "carafe": CarafeUpsample,
    "dysample": DySampleUpsample,
}

# Options a head passes to every upsampler; those that do not use one ignore it.
_CONTEXT_OPTIONS = ("switch_channels",)


def check_upsampler(name: str) -> None:
    if name not in UPSAMPLERS:
        close = difflib.get_close_matches(name, UPSAMPLERS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown upsampler {name!r}{hint} Choices: {', '.join(UPSAMPLERS)}")


def make_upsampler(name: str, in_channels: int, out_channels: int, scale: int,
                   **options) -> Upsampler:
    check_upsampler(name)
    if scale == 1:
        return Project(in_channels, out_channels)
    cls = UPSAMPLERS[name]
    target = cls.func if isinstance(cls, partial) else cls
    accepted = inspect.signature(target.__init__).parameters
    for key in _CONTEXT_OPTIONS:
        if key not in accepted:
            options.pop(key, None)
    return cls(in_channels, out_channels, scale, **options)
