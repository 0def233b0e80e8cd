"""`a2u`: affinity-aware upsampling, pure PyTorch.

A2U, "Learning Affinity-Aware Upsampling for Deep Image Matting" (Dai, Lu &
Shen, CVPR 2021). A CARAFE-style reassembly (each output point a weighted sum
of the K x K low-resolution neighbours of its source pixel) whose kernels are
second order: a low-rank bilinear form of the encoder feature around the point,
instead of CARAFE's linear function of the decoder feature.

With ``G`` the guide (the encoder feature at the target resolution, the feature
the paper's kernels are generated from) on the s*h x s*w grid:

- ``U, V``: d filters of size e x e (e = 3s: 6 x 6 at x2, the authors'
  ``encode_kernel_size``), generated per image from ``G`` (adaptive average
  pooling to e x e, then a 1x1 convolution to d channels) and shared by all
  channels (the authors' ``share=True``);
- ``a_u = LReLU(GN(U * G))``, ``a_v = LReLU(GN(V * G))``: each channel of ``G``
  filtered with stride s, so one value per source pixel (GroupNorm over the
  channels, LeakyReLU with slope 0.01, as the authors');
- affinity ``A_j(y, x) = sum_c a_u[c, j] * a_v[c, j] / sqrt(C)``: the bilinear
  form ``g^T U_j V_j^T g`` of rank d (default 1, the authors') on the window
  around the source pixel;
- kernel logits ``z = P A``, P a (K*K*s*s) x d matrix generated per image from
  ``G``'s global average (a 1x1 convolution): K*K weights for each of the s*s
  sub-pixel positions of every source pixel;
- kernels ``softmax_K(sigmoid(z))`` (the authors' normalisation, K = 3, their
  ``up_kernel_size``) over the in-image neighbours, and
  ``out = reassemble(Q(x), kernels)``, Q a 1x1 projection to ``out_channels``
  where widths differ.

The encoder keeps its own downsampling: the paper's affinity-aware
downsampling (A2D, the same affinities with a second P, replacing the
encoder's stride-2 steps) needs an encoder built for it; only the upsampler is
here, driven by the guide as the paper's is by the pre-downsampling feature.
Neighbours outside the image take no weight (`decoders/reassembly.py`); the
authors' kernel skips them without renormalising.

At initialisation (Xavier-normal convolutions, zero biases, as the authors'
default) ``sigmoid`` keeps every logit in (0, 1), so the kernel weights of a
point differ by less than a factor e: the output starts as a K x K local
weighted mean of the decoder feature, each weight within
[1 / (1 + (n-1)e), e / (e + n - 1)] for n in-image neighbours.

Cost: the affinity is computed at the input's (low) resolution (both
branches' stride-s filtering of the guide as one matrix product over the s*s
phases of its space-to-depth form, then 9 shifted sums; no unfold of the
guide), the kernels are generated there for all s*s positions at once, and
only the reassembly (`decoders/local_ops.py`) touches the output size.

ONNX (measured 2026-12-05): the dynamo exporter gives a graph with dynamic sizes,
equal to eager within 2.2e-6 at 64x64, 96x128 and 97x131 (U-Net, test encoder), a size
the encoder does not halve exactly. It failed there until `guide_grid`
(`decoders/reassembly.py`) fitted the guide by index gathers under tracing: its crop
``guide[..., :th]`` had made the exporter keep only sizes where the guide is at least
the s*h x s*w grid. The slow test `test_export_to_onnx_with_dynamic_sizes` checks it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders import local_ops
from decoders.blocks import fit_to_size
from decoders.reassembly import guide_grid
from decoders.upsample import Upsampler, project, register_upsampler


def adaptive_mean(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as two small averaging matrices, which ONNX exports
    at any input size (the pooling operator itself only at a fixed one)."""
    rows = _bin_matrix(x.shape[-2], bins, x)
    cols = _bin_matrix(x.shape[-1], bins, x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _bin_matrix(size, bins: int, like: Tensor) -> Tensor:
    """(bins, size): row b averages positions floor(b*L/bins) .. ceil((b+1)*L/bins) - 1,
    adaptive pooling's bins, from comparisons only (no index arithmetic to go out of range)."""
    i = torch.arange(bins, device=like.device).unsqueeze(1)
    pos = torch.arange(size, device=like.device).unsqueeze(0)
    m = ((pos >= (i * size) // bins) & (pos < ((i + 1) * size + bins - 1) // bins)).to(like.dtype)
    return m / m.sum(1, keepdim=True)


def strided_filter(guide: Tensor, filters: Tensor, scale: int) -> Tensor:
    """Each channel of ``guide`` (N, C, s*h, s*w) filtered with stride s by the per-image
    filters (N, D, 3s, 3s) (padding s): (N, C, D, h, w), one value per source pixel.

    The 3s x 3s window of a source pixel is its 3 x 3 block neighbourhood in the
    space-to-depth form of the guide: one matrix product over the s*s phases gives
    the 9 block responses of every filter at the low resolution, and `F.fold` adds
    the 9 shifted responses up (no unfold of the guide, no per-image convolution,
    and a backward pass that is one unfold of the gradient)."""
    n, c = guide.shape[:2]
    s = scale
    h, w = guide.shape[-2] // s, guide.shape[-1] // s
    d = filters.shape[1]
    # explicit sizes, no -1: an inferred size makes export guard on divisibility
    blocks = F.pixel_unshuffle(F.pad(guide, (s, s, s, s)), s).reshape(n, c, s * s, (h + 2) * (w + 2))
    # filters (N, D, by*s+i, bx*s+j) -> (N, 1, (D, 2-by, 2-bx), i*s+j): fold adds column
    # (ky, kx) of position (y', x') into (y' + ky, x' + kx), so block (by, bx) goes in flipped
    f = filters.reshape(n, d, 3, s, 3, s).flip(2, 4).permute(0, 1, 2, 4, 3, 5).reshape(n, 1, 9 * d, s * s)
    z = torch.matmul(f.to(guide.dtype), blocks).reshape(n * c * d, 9, (h + 2) * (w + 2))
    out = F.fold(z, (h + 4, w + 4), 3)          # out[y + 2, x + 2] = sum_b z_b[y + by, x + bx]
    return out[..., 2:2 + h, 2:2 + w].reshape(n, c, d, h, w)


@register_upsampler("a2u")
class A2UUpsample(Upsampler):
    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None,
                 up_kernel: int = 3, rank: int = 1):
        super().__init__(in_channels, out_channels, scale)
        guide_channels = guide_channels or in_channels
        self.k, self.rank, self.e = up_kernel, rank, 3 * scale
        self.filter_u = nn.Conv2d(guide_channels, rank, 1)
        self.filter_v = nn.Conv2d(guide_channels, rank, 1)
        self.mixer = nn.Conv2d(guide_channels, rank * up_kernel ** 2 * scale ** 2, 1)  # P
        groups = math.gcd(32, guide_channels)  # the authors' 32 groups, where they divide
        self.norm_u = nn.GroupNorm(groups, guide_channels)
        self.norm_v = nn.GroupNorm(groups, guide_channels)
        for conv in (self.filter_u, self.filter_v, self.mixer):
            nn.init.xavier_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.project = project(in_channels, out_channels)

    def affinity(self, guide: Tensor) -> Tensor:
        """(N, d, h, w): the rank-d bilinear form at every source pixel."""
        pooled = adaptive_mean(guide, self.e)
        filters = torch.cat([self.filter_u(pooled), self.filter_v(pooled)], 1)   # (N, 2d, e, e)
        a = strided_filter(guide, filters, self.scale)                           # (N, C, 2d, h, w)
        n, c, _, h, w = a.shape
        a = a.transpose(1, 2).reshape(n, 2, self.rank * c, h, w)
        # GroupNorm per image and rank, then LeakyReLU (slope 0.01), as the authors'
        a_u = F.leaky_relu(self.norm_u(a[:, 0].reshape(n * self.rank, c, h, w)), 0.01)
        a_v = F.leaky_relu(self.norm_v(a[:, 1].reshape(n * self.rank, c, h, w)), 0.01)
        return (a_u * a_v).sum(1).reshape(n, self.rank, h, w) / math.sqrt(c)

    def weights(self, x: Tensor, guide: Tensor) -> Tensor:
        """(N, K*K, s*s, h, w) reassembly kernels per source pixel and sub-pixel position."""
        n, _, h, w = x.shape
        s, k2 = self.scale, self.k ** 2
        mix = self.mixer(guide.mean((2, 3), keepdim=True)).reshape(n, k2 * s * s, self.rank)
        logits = torch.einsum("nod,ndhw->nohw", mix, self.affinity(guide))
        # output o = k*s*s + p: neighbour k at sub-pixel position p (PixelShuffle's order)
        return local_ops.neighbour_softmax(torch.sigmoid(logits.reshape(n, k2, s * s, h, w)), self.k)

    def kernels(self, x: Tensor, guide: Tensor) -> Tensor:
        """(N, K*K, s*h, s*w) reassembly kernels; ``guide`` on the s*h x s*w grid."""
        return local_ops.from_phases(self.weights(x, guide), self.scale)

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        g = guide_grid(guide, h, w, self.scale, "a2u")
        out = local_ops.reassemble(self.project(x), self.weights(x, g), self.k)
        return fit_to_size(local_ops.from_phases(out, self.scale), self.target(x, output_size))
