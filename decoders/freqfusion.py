"""`freqfusion`: frequency-aware feature fusion, pure PyTorch.

FreqFusion, "Frequency-aware Feature Fusion for Dense Image Prediction" (Chen,
Fu, Gu, Xu & Wang, TPAMI 2024). Where a coarse decoder feature meets a fine
encoder feature, three parts:

- an adaptive low-pass filter (ALPF): CARAFE-style reassembly kernels (5 x 5)
  that upsample the coarse feature and smooth it inside objects;
- an offset generator: DySample-style resampling of the upsampled feature,
  offsets from the local cosine similarity of both features, so points near a
  boundary take their value from the side they belong to;
- an adaptive high-pass filter (AHPF): 3 x 3 kernels whose residual
  ``G - lowpass(G)`` restores the fine feature's edges, added back to it.

In this zoo the fine feature is the guide (the encoder feature at the target
resolution) and the fused map is the upsampler's output, as in the authors'
FPN, which sums both halves: ``out = resample(ALPF(Q x)) + A(2 G - AHPF(G))``,
Q and A 1x1 projections to ``out_channels`` where widths differ. Heads that
concatenate the encoder feature next (U-Net) still do.

Reference choices followed (the authors' ``FreqFusion.py`` with the settings of
their released configs): ``semi_conv`` and ``comp_feat_upsample`` (the
kernels are generated from both features, each half's logits from the coarse
feature upsampled by the other half's first kernels, the guide's compressed
feature sharpened by an initial high-pass first), ``hr_residual``
(``G + (G - lowpass(G))``), ``feature_resample`` with 4 groups, GroupNorm, the
cosine similarity to the 8 neighbours at dilation 2 concatenated to the
features (``sim_concat``) and the sigmoid "direct scale" of the offsets.
Compressed channels: (guide + input channels) / ``compress_ratio`` (8, their
FPN's; a multiple of 8, at least 8, for GroupNorm's groups of 8). The kernels
may carry the Hamming window (``hamming=True``, the class's default; their
SegNeXt config turns it off): softmax, times the window, renormalised, which
is a softmax of the logits plus the window's logarithm. Scales above 2 (the
reference fuses x2 only) use the same construction with s*s sub-pixel phases.

At initialisation (the authors' init: Xavier-uniform convolutions, kernel
generators normal with std 0.001, offset generators normal with std 0.001,
the direct-scale convolutions zero), the kernels are near uniform (times the
Hamming window) and the offsets near zero, so the output starts close to a
local (Hamming-weighted) mean of the coarse feature, nearest-upsampled, plus
the projected guide sharpened by ``G - mean_3x3(G)`` (Hamming-weighted too); the resampling starts as
the identity (sampling positions on the upsampled feature's pixel centres).

Neighbours outside the image take no weight (`decoders/reassembly.py`); the
authors' CARAFE zero-pads.

Cost: kernel logits from the coarse feature are computed at its resolution
(semi-shift: one 3x3 convolution per half, shared by both features), the
reassembly runs at the low resolution, per sub-pixel phase, with kernels grouped
by source pixel throughout (`decoders/local_ops.py`), the 3 x 3 high-pass runs as
shifted sums without unfolding, the cosine similarities as 8 shifted products,
and the offsets for all s*s sub-pixel positions come from one low-resolution
convolution plus one at the guide's resolution.

ONNX (measured 2026-12-05 before the reassembly moved onto `local_ops`): the dynamo
exporter gave a graph with dynamic sizes, equal to eager within 2e-6 at 64x64 and
96x128 (U-Net), that failed at 97x131, a size the encoder does not halve exactly
(the exporter specialised the guide's fit to the s*h x s*w grid); open. The slow
test `test_export_to_onnx_with_dynamic_sizes` checks it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders import local_ops
from decoders.blocks import fit_to_size
from decoders.reassembly import guide_grid, neighbour_softmax, reassemble
from decoders.upsample import Upsampler, project, register_upsampler


def log_hamming(kernel_size: int) -> Tensor:
    """(k*k,) logarithm of the 2-D Hamming window (numpy's, outer product), row-major."""
    window = np.outer(np.hamming(kernel_size), np.hamming(kernel_size))
    return torch.from_numpy(np.log(window)).float().flatten()


def neighbour_cosine(x: Tensor, dilation: int = 2) -> Tensor:
    """(N, 8, H, W): cosine similarity of every point to its 8 neighbours at ``dilation``
    (3 x 3 window, row-major, centre left out); neighbours outside the map count as 0."""
    h, w = x.shape[-2:]
    d = dilation
    unit = F.pad(F.normalize(x, dim=1, eps=1e-8), (d, d, d, d))
    centre = unit[..., d:d + h, d:d + w]
    sims = [(centre * unit[..., i * d:i * d + h, j * d:j * d + w]).sum(1)
            for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    return torch.stack(sims, 1)


class OffsetGenerator(nn.Module):
    """FreqFusion's offset generator (the authors' ``LocalSimGuidedSampler``, "lp" style):
    per sub-pixel position and group, an offset in source pixels,
    ``(off(L) + unshuffle(off_hr(H))) * sigmoid(scl(L) + unshuffle(scl_hr(H))) + init``,
    L and H the normalised coarse and fine features with their neighbour similarities."""

    def __init__(self, channels: int, scale: int, groups: int = 4, kernel: int = 3):
        super().__init__()
        self.scale, self.groups = scale, groups
        feats = channels + 8
        self.norm_lr, self.norm_hr = nn.GroupNorm(channels // 8, channels), nn.GroupNorm(channels // 8, channels)
        # offsets and direct scales in one convolution per resolution (2g*s*s + 2g*s*s, 2g + 2g)
        self.low = nn.Conv2d(feats, 4 * groups * scale ** 2, kernel, padding=kernel // 2)
        self.high = nn.Conv2d(feats, 4 * groups, kernel, padding=kernel // 2)
        for conv, n_off in ((self.low, 2 * groups * scale ** 2), (self.high, 2 * groups)):
            nn.init.normal_(conv.weight[:n_off], std=0.001)
            nn.init.zeros_(conv.weight[n_off:])  # the direct scale starts at sigmoid(0) = 1/2
            nn.init.zeros_(conv.bias)
        # sub-pixel position of each output relative to its source pixel centre; (xy, group, phase)
        h = (torch.arange(scale) - (scale - 1) / 2) / scale
        pos = torch.stack([h.repeat(scale), h.repeat_interleave(scale)])  # phase i*s+j: (h[j], h[i])
        self.register_buffer("init_pos", pos.repeat(1, groups).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """(N, 2*g*s*s, h, w) offsets: channel (xy, group, phase), in source pixels."""
        s = self.scale
        fine, coarse = self.norm_hr(fine), self.norm_lr(coarse)
        low = self.low(torch.cat([coarse, neighbour_cosine(coarse)], 1))
        high = F.pixel_unshuffle(self.high(torch.cat([fine, neighbour_cosine(fine)], 1)), s)
        n, _, h, w = low.shape
        g2 = 2 * self.groups
        # unshuffled channel (xy, group, phase) = (c, phase) with c = xy * g + group, as `low`'s
        off_l, scl_l = low[:, :g2 * s * s], low[:, g2 * s * s:]
        off_h, scl_h = high[:, :g2 * s * s], high[:, g2 * s * s:]
        return (off_l + off_h) * torch.sigmoid(scl_l + scl_h) + self.init_pos


def resample(feature: Tensor, offset: Tensor, groups: int, s: int) -> Tensor:
    """Bilinear samples of ``feature`` (N, C, s*h, s*w) at the source-pixel positions plus
    ``offset`` (N, 2*g*s*s, h, w), per channel group (grid_sample, border padding, fp32)."""
    n, _, h, w = offset.shape
    c = feature.shape[1]
    dev = feature.device
    with torch.autocast(dev.type, enabled=False):
        ys = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
        xs = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
        base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
        norm = torch.tensor([w, h], device=dev, dtype=torch.float32).view(1, 2, 1, 1, 1)
        coords = 2 * (base.view(1, 2, 1, h, w) + offset.float().view(n, 2, groups * s * s, h, w)) / norm - 1
        coords = F.pixel_shuffle(coords.reshape(n, 2 * groups * s * s, h, w), s)  # (n, 2g, sh, sw)
        grid = coords.view(n, 2, groups, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(n * groups, s * h, s * w, 2)
        out = F.grid_sample(feature.float().reshape(n * groups, c // groups, s * h, s * w), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)
    return out.to(feature.dtype).view(n, c, s * h, s * w)


@register_upsampler("freqfusion")
class FreqFusionUpsample(Upsampler):
    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None,
                 compress_ratio: int = 8, lowpass_kernel: int = 5, highpass_kernel: int = 3,
                 encoder_kernel: int = 3, hamming: bool = True, resample_groups: int = 4,
                 resample: bool = True):
        super().__init__(in_channels, out_channels, scale)
        guide_channels = guide_channels or in_channels
        self.kl, self.kh = lowpass_kernel, highpass_kernel
        mid = max(8, (guide_channels + in_channels) // compress_ratio // 8 * 8)
        self.compress_hr = nn.Conv2d(guide_channels, mid, 1)
        self.compress_lr = nn.Conv2d(in_channels, mid, 1)
        pad = encoder_kernel // 2
        self.lowpass = nn.Conv2d(mid, lowpass_kernel ** 2, encoder_kernel, padding=pad)    # ALPF logits
        self.highpass = nn.Conv2d(mid, highpass_kernel ** 2, encoder_kernel, padding=pad)  # AHPF logits
        for conv in (self.compress_hr, self.compress_lr, self.lowpass, self.highpass):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        for conv in (self.lowpass, self.highpass):
            nn.init.normal_(conv.weight, std=0.001)
        self.project = project(in_channels, out_channels)
        self.align = project(guide_channels, out_channels)
        # the high-pass is linear and channel-wise: run it on the narrower side of the projection
        self.align_first = out_channels <= guide_channels
        self.groups = resample_groups if out_channels % resample_groups == 0 else 1
        self.offsets = OffsetGenerator(mid, scale, self.groups) if resample else None
        for name, k in (("prior_low", lowpass_kernel), ("prior_high", highpass_kernel)):
            self.register_buffer(name, log_hamming(k) if hamming else torch.zeros(k * k), persistent=False)

    def filters(self, x: Tensor, guide: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Low-pass kernels (N, kl^2, s*s, h, w) per source pixel and sub-pixel position,
        high-pass kernels (N, kh^2, s*h, s*w) per point, and the compressed fine and coarse
        features the offsets read; ``guide`` on the s*h x s*w grid."""
        s, kl = self.scale, self.kl
        prior = self.prior_low.reshape(1, -1, 1, 1, 1)
        fine, coarse = self.compress_hr(guide), self.compress_lr(x)
        # an initial high-pass from the guide alone sharpens its compressed feature
        high = self.highpass(fine)
        fine = 2 * fine - reassemble(fine, neighbour_softmax(high, self.kh, 1, self.prior_high), self.kh, 1)
        # low-pass logits: the guide's plus the coarse feature's, upsampled by the guide's kernels
        low = local_ops.to_phases(self.lowpass(fine), s) + prior
        first = local_ops.neighbour_softmax(low, kl)
        lowpass = local_ops.neighbour_softmax(low + local_ops.reassemble(self.lowpass(coarse), first, kl), kl)
        # high-pass logits: the guide's plus the coarse feature's, upsampled by the low-pass
        high = high + local_ops.from_phases(local_ops.reassemble(self.highpass(coarse), lowpass, kl), s)
        return lowpass, neighbour_softmax(high, self.kh, 1, self.prior_high), fine, coarse

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        g = guide_grid(guide, h, w, self.scale, "freqfusion")
        lowpass, highpass, fine, coarse = self.filters(x, g)
        up = local_ops.from_phases(local_ops.reassemble(self.project(x), lowpass, self.kl), self.scale)
        if self.offsets is not None:
            up = resample(up, self.offsets(fine, coarse), self.groups, self.scale)
        a = self.align(g) if self.align_first else g
        sharp = 2 * a - reassemble(a, highpass, self.kh, 1)
        out = up + (sharp if self.align_first else self.align(sharp))
        return fit_to_size(out, self.target(x, output_size))
