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

At initialisation (Xavier-uniform convolutions, kernel generators normal with
std 0.001, offset generators normal with std 0.001, the direct-scale
convolutions zero: the initialisation the authors' classes declare; their
FreqFusion.init_weights() then re-draws every convolution of the offset
generator Xavier-uniform, so their offsets start up to about two source pixels
from the identity, not within a hundredth of one as here), the kernels are near uniform (times the
Hamming window) and the offsets near zero, so the output starts close to a
local (Hamming-weighted) mean of the coarse feature, nearest-upsampled, plus
the projected guide sharpened by ``G - mean_3x3(G)`` (Hamming-weighted too); the resampling starts as
the identity (sampling positions on the upsampled feature's pixel centres).

Neighbours outside the image take no weight (`decoders/reassembly.py`); the
authors' CARAFE zero-pads.

Cost: kernel logits from the coarse feature are computed at its resolution
(semi-shift: one 3x3 convolution per half, shared by both features); every
reassembly runs on `decoders/local_ops.py`'s in-place loops at the source
resolution, per sub-pixel phase (the 3 x 3 high-pass as a single phase), with
no k x k neighbourhood unfolded; the guide's low-pass logits, wanted per phase,
run as s*s stride-s convolutions, one per phase (no slower than one convolution
at the fine resolution and a pixel unshuffle, in either memory format, once the
layouts are converted); each half of the offsets is one convolution of its
feature and its similarities, concatenated, at the feature's resolution (faster
than a convolution of each, or than phase convolutions); the low-pass values and
the coarse high-pass logits share one softmax-and-reassembly step by the low-pass
kernels (each reassembled apart, the kernels' gradient summed over both in one
buffer); each neighbour softmax adds the window and the out-of-image mask as one
bias, in place where the logits are the step's own, and writes its kernels over
logits that are its own (the low-pass kernels over `first_lowpass`'s output, the
high-pass kernels over their biased sum, the guide's first low-pass kernels over
their recomputed logits; in `first_lowpass`'s forward pass a band of rows at a
time, each band's reassembly added to its logits): tensors of 25 x s*s channels
at the source resolution are the step's largest (33 MiB on the last U-Net step),
and on the CPU a fresh one over 32 MiB costs its page faults when glibc maps it
anew, as much time again as one pass over it (about 14 ms there). Whether it does
depends on the free space glibc's heap has left, from step to step: a training
step of the whole U-Net took from 1 to 170 thousand page faults (bilinear's 110
to 170 thousand), up to about 0.3 s: much of the benchmark's noise. A guide
already on the grid is used as it is (`guide_grid`, no copy).
Hand-written backward passes keep little: the guide's sharpening (`sharpen`)
keeps the guide and its first low-pass kernels (`first_lowpass`) the compressed
features, both recomputing their convolutions and softmax; the neighbour
similarities keep their concatenation with the input (which the offsets'
convolution keeps too) and its norm; the softmax-and-reassembly steps turn the
kernels' gradient into the logits' in place. U-Net / ResNet-18 at 360x480,
batch 2, training step against bilinear's (2026-12-05, 2-core CPU shared with
other jobs, torch 2.14.1, one thread; ``python -m zoo benchmark --upsamplers
--arch unet --encoder resnet18 --size 360 480 --batch 2 --iters 3 --warmup 1
--threads 1 --num-classes 12 --upsample bilinear freqfusion``): CPU time 2.00x
-> 1.72x (1.69x to 1.76x over five runs) -> 1.57x (twice, in runs alternating with
the previous code's, which gave 1.66x and 1.64x there; 1.66x, 1.72x and 1.69x in three
later runs, 09:55 UTC, while a full-resolution training shared the machine) with the kernels written over
their logits, the parts of the shared reassembly reassembled apart (no
concatenation of their gradients), the softmax and reassembly of the high-pass
kernels in one step, the out-of-image mask from a row and a column test and the
sampling grid interleaved from its x and y planes; peak memory 1.47x -> 1.44x
(1.88x before the hand-written backward passes; 714 MB, unchanged by that last
round); over the 1.5x target. What remains is
the definition's arithmetic: on the last step, convolutions of 8 to 25 channels
at the fine resolution (about 40%: oneDNN runs so few channels far from its
peak), the loops of the two 25 x 25-per-point reassemblies and their backward
passes (about 30%: about 6 G multiply-adds a second, each streaming its operands
through the cache), the softmaxes and grid_sample. Measured slower there: the
reassembly as batched (25 x 25) @ (25 x 4) products per point (3.3x the loops'
time), the guide's high- and low-pass logits as one 34-channel convolution (1.3x
the two), the weight gradient of the offsets' fine convolution as nine matrix
products (5x oneDNN's); the phase convolutions' backward pass as one at the fine
resolution took the same time as the four.

ONNX (measured 2026-12-05): the dynamo exporter gives a graph with dynamic sizes,
equal to eager within 3.4e-6 at 64x64, 96x128 and 97x131 (U-Net, test encoder), a size
the encoder does not halve exactly. It failed there until `guide_grid`
(`decoders/reassembly.py`) fitted the guide by index gathers under tracing: its crop
``guide[..., :th]`` had made the exporter keep only sizes where the guide is at least
the s*h x s*w grid (a guard ``th <= guide rows``, false at 97x131). Under tracing every
step takes its plain form (no hand-written backward passes, no loops over sizes). The
slow test `test_export_to_onnx_with_dynamic_sizes` checks it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders import local_ops
from decoders.blocks import fit_to_size
from decoders.freqfusion_ops import OffsetGenerator, first_lowpass, log_hamming, resample, sharpen
from decoders.reassembly import guide_grid, neighbour_softmax
from decoders.upsample import Upsampler, project, register_upsampler


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
        lowpass, high, fine, coarse, _ = self._filters(x, guide, None)
        return lowpass, neighbour_softmax(high, self.kh, 1, self.prior_high), fine, coarse

    def _filters(self, x: Tensor, guide: Tensor, values: Tensor | None):
        """`filters`, the high-pass as logits; with ``values`` (N, C, h, w) also their low-pass
        reassembly (N, C, s*h, s*w), in the same pass as the high-pass logits'."""
        s, kl = self.scale, self.kl
        coarse = self.compress_lr(x)
        # an initial high-pass from the guide alone sharpens its compressed feature
        high, fine = sharpen(guide, self.compress_hr, self.highpass, self.kh, self.prior_high)
        # low-pass logits (with their neighbour bias): the guide's plus the coarse feature's,
        # upsampled by the guide's kernels
        low = first_lowpass(fine, coarse, self.lowpass, kl, s, self.prior_low)
        # high-pass logits: the guide's plus the coarse feature's, upsampled by the low-pass; the
        # values to upsample share that step (one softmax, one gradient of the kernels)
        coarse_high = self.highpass(coarse)
        parts = [coarse_high] + ([] if values is None else [values.to(coarse_high.dtype)])
        lowpass, *parts = local_ops.softmax_reassemble(low, parts, kl, biased=True)
        coarse_high, *up = (local_ops.from_phases(part, s) for part in parts)
        return lowpass, high + coarse_high, fine, coarse, (up[0] if up else None)

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        g = guide_grid(guide, h, w, self.scale, "freqfusion")
        _, high, fine, coarse, up = self._filters(x, g, self.project(x))
        if self.offsets is not None:
            up = resample(up, self.offsets(fine, coarse), self.groups, self.scale)
        a = self.align(g) if self.align_first else g
        # the kernels and their reassembly in one step: its softmax overwrites its own biased logits
        # and its backward pass turns the kernels' gradient into the logits' in place
        _, smooth = local_ops.softmax_reassemble(high.unsqueeze(2), [a], self.kh, self.prior_high)
        sharp = 2 * a - smooth.squeeze(2)
        out = up + (sharp if self.align_first else self.align(sharp))
        return fit_to_size(out, self.target(x, output_size))
