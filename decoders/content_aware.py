"""Content-aware upsamplers, pure PyTorch.

- `carafe`: content-aware reassembly of features (Wang et al., ICCV 2019).
- `dysample`: learned point sampling with grid_sample (Liu et al., ICCV 2023),
  bilinear upsampling at initialisation.

Each is an `Upsampler` registered by name (`decoders.upsample`), so it runs
in every architecture.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decoders.blocks import fit_to_size
from decoders.local_ops import from_phases, reassemble
from decoders.upsample import Upsampler, project, register_upsampler


@register_upsampler("carafe")
class CarafeUpsample(Upsampler):
    """CARAFE: each output pixel is a softmax-weighted sum over the k_up x k_up
    neighbourhood of its source pixel (zero-padded at the border, as the
    authors'), the weights predicted from the content. The reassembly runs at
    the input's resolution, one plane per sub-pixel phase (`decoders.local_ops`)."""

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
        self.project = project(in_channels, out_channels)

    def forward(self, x, guide=None, indices=None, output_size=None):
        s, k2 = self.scale, self.k ** 2
        # The encoder's output channels are (phase, neighbour); reordering its
        # filters to (neighbour, phase) yields the kernels in the layout the
        # reassembly reads, with no copy of the activations. (mmcv's CARAFE orders
        # them (neighbour, phase): its checkpoints load after the same permutation.)
        weight = self.encode.weight.unflatten(0, (s * s, k2)).transpose(0, 1).flatten(0, 1)
        bias = self.encode.bias.unflatten(0, (s * s, k2)).t().flatten()
        logits = F.conv2d(self.compress(x), weight, bias, padding=self.encode.padding)
        kernels = logits.unflatten(1, (k2, s * s)).softmax(dim=1)       # (n, k*k, s*s, h, w)
        out = from_phases(reassemble(self.project(x), kernels, self.k), s)
        return fit_to_size(out, self.target(x, output_size))


@register_upsampler("dysample")
class DySampleUpsample(Upsampler):
    """DySample ("LP" style): per output pixel, a learned offset (scope 0.25
    of a source pixel) around the position bilinear interpolation would
    sample; grid_sample then reads the features there. Offsets start near zero,
    so at initialisation it is bilinear upsampling followed by a 1x1 projection.

    Sampling positions are built and used in float32 whatever the autocast
    dtype: in bf16 (8 significant bits) a coordinate beyond ~128 px rounds by
    up to a pixel, and the output drifts from bilinear by the input's scale.
    """

    def __init__(self, in_channels, out_channels, scale, groups: int = 4):
        super().__init__(in_channels, out_channels, scale)
        self.groups = groups if out_channels % groups == 0 else 1
        self.offset = nn.Conv2d(in_channels, 2 * self.groups * scale ** 2, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        self.project = project(in_channels, out_channels)
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
        feats = self.project(x)
        with torch.autocast(x.device.type, enabled=False):
            offset = self.offset(x.float()) * 0.25 + self.init_pos     # (n, 2*g*s*s, h, w), fp32
            ys = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5
            xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
            base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
            norm = torch.tensor([w, h], device=x.device, dtype=torch.float32).view(1, 2, 1, 1, 1)
            coords = 2 * (base.view(1, 2, 1, h, w) + offset.view(n, 2, -1, h, w)) / norm - 1
            coords = F.pixel_shuffle(coords.reshape(n, -1, h, w), s)  # (n, 2g, sh, sw)
            grid = coords.view(n, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(n * g, s * h, s * w, 2)
            out = F.grid_sample(feats.float().reshape(n * g, -1, h, w), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
        out = out.to(feats.dtype).view(n, -1, s * h, s * w)
        return fit_to_size(out, self.target(x, output_size))
