"""Reassembly with one k x k kernel per output point, in the layout of the output.

CARAFE-style reassembly (Wang et al., ICCV 2019), as `a2u` and `freqfusion`
use it: every output point is a weighted sum of the k x k neighbours of its
source pixel ``(Y // s, X // s)``, with kernels at the output resolution as
mmcv's ``carafe`` takes them, ``(N, k*k, s*h, s*w)``, neighbours row-major over
the window. For s >= 2 these are thin adapters over `decoders/local_ops.py`
(the low-resolution, per-phase operators CARAFE, FADE and SAPA share); at
s = 1 (FreqFusion's high-pass filter) the reassembly is k*k weighted shifted
views, so nothing k*k times the feature map is gathered or kept.

Neighbours outside the image take no weight: they are left out of the softmax,
as this zoo's FADE and SAPA do, so a constant map stays constant up to the
border and every output is a convex combination of real features. The
authors' reassembly zero-pads instead (part of the weight lands on zeros near
the border).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from decoders import local_ops


def guide_grid(guide: Tensor | None, h: int, w: int, scale: int, name: str) -> Tensor:
    """The guide fitted to the full ``s*h x s*w`` grid of an ``h x w`` input: cropped where
    larger, replicate-padded where the target stops short of it (ceil division)."""
    if guide is None:
        raise ValueError(f"{name} needs a guide: the encoder feature at the target resolution")
    th, tw = h * scale, w * scale
    guide = guide[..., :th, :tw]
    # Padding by amounts that may be 0, without a branch on sizes: exports stay dynamic.
    return F.pad(guide, (0, tw - guide.shape[-1], 0, th - guide.shape[-2]), mode="replicate")


def neighbour_softmax(logits: Tensor, kernel_size: int, scale: int,
                      prior: Tensor | None = None) -> Tensor:
    """Softmax over the k*k neighbours (dim 1) of (N, k*k, s*h, s*w) logits, neighbours
    outside the h x w source image excluded (weight exactly 0). ``prior`` (k*k,) is added
    first: a window the kernels are multiplied by, then renormalised (FreqFusion's Hamming
    window: softmax(z) * win / sum = softmax(z + log win))."""
    if prior is not None:
        logits = logits + prior.to(logits.dtype).reshape(1, -1, 1, 1)
    phases = local_ops.to_phases(logits, scale)
    return local_ops.from_phases(local_ops.neighbour_softmax(phases, kernel_size), scale)


def reassemble(values: Tensor, kernels: Tensor, kernel_size: int, scale: int) -> Tensor:
    """out[:, c, Y, X] = sum_k kernels[:, k, Y, X] * values[:, c, Y // s + dy_k, X // s + dx_k].

    ``values`` (N, C, h, w); ``kernels`` (N, k*k, s*h, s*w). Returns (N, C, s*h, s*w);
    neighbours outside the image contribute nothing."""
    kernels = kernels.to(values.dtype)
    if scale == 1:
        return _shifted_sum(values, kernels, kernel_size)
    out = local_ops.reassemble(values, local_ops.to_phases(kernels, scale), kernel_size)
    return local_ops.from_phases(out, scale)


def _shifted_sum(values: Tensor, kernels: Tensor, kernel_size: int) -> Tensor:
    """Scale-1 reassembly as k*k weighted shifted views (no unfold at this resolution)."""
    h, w = values.shape[-2:]
    r = kernel_size // 2
    padded = F.pad(values, (r, r, r, r))
    out = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            term = padded[..., i:i + h, j:j + w] * kernels[:, i * kernel_size + j:i * kernel_size + j + 1]
            out = term if out is None else out + term
    return out
