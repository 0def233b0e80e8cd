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

import torch
import torch.nn.functional as F
from torch import Tensor

from decoders import local_ops


def guide_grid(guide: Tensor | None, h: int, w: int, scale: int, name: str) -> Tensor:
    """The guide fitted to the full ``s*h x s*w`` grid of an ``h x w`` input: cropped where
    larger, replicate-padded where the target stops short of it (ceil division); the guide
    itself where it fits already (no copy, and none of its gradient)."""
    if guide is None:
        raise ValueError(f"{name} needs a guide: the encoder feature at the target resolution")
    th, tw = h * scale, w * scale
    if local_ops._tracing():
        # One gather of rows and one of columns, indices clamped to the last: the crop and
        # the replicate padding with no size comparison in the graph. Slicing to ``:th``
        # would make the exporter resolve min(guide rows, th) for the example input and
        # keep only sizes where the same side wins (a U-Net at 97x131: guide 49 rows, 50
        # wanted), whatever the padding after it.
        rows = torch.arange(th, device=guide.device).clamp(max=guide.shape[-2] - 1)
        cols = torch.arange(tw, device=guide.device).clamp(max=guide.shape[-1] - 1)
        return guide.index_select(-2, rows).index_select(-1, cols)
    if guide.shape[-2:] == (th, tw):
        return guide
    guide = guide[..., :th, :tw]
    return F.pad(guide, (0, tw - guide.shape[-1], 0, th - guide.shape[-2]), mode="replicate")


def neighbour_softmax(logits: Tensor, kernel_size: int, scale: int,
                      prior: Tensor | None = None) -> Tensor:
    """Softmax over the k*k neighbours (dim 1) of (N, k*k, s*h, s*w) logits, neighbours
    outside the h x w source image excluded (weight exactly 0). ``prior`` (k*k,) is added
    first: a window the kernels are multiplied by, then renormalised (FreqFusion's Hamming
    window: softmax(z) * win / sum = softmax(z + log win))."""
    if scale == 1:  # one phase: a view, no pixel (un)shuffle
        return local_ops.neighbour_softmax(logits.unsqueeze(2), kernel_size, prior).squeeze(2)
    phases = local_ops.to_phases(logits, scale)
    return local_ops.from_phases(local_ops.neighbour_softmax(phases, kernel_size, prior), scale)


def reassemble(values: Tensor, kernels: Tensor, kernel_size: int, scale: int) -> Tensor:
    """out[:, c, Y, X] = sum_k kernels[:, k, Y, X] * values[:, c, Y // s + dy_k, X // s + dx_k].

    ``values`` (N, C, h, w); ``kernels`` (N, k*k, s*h, s*w). Returns (N, C, s*h, s*w);
    neighbours outside the image contribute nothing."""
    kernels = kernels.to(values.dtype)
    if scale == 1:  # one phase: local_ops' in-place loops, nothing k*k times the map kept
        return local_ops.reassemble(values, kernels.unsqueeze(2), kernel_size).squeeze(2)
    out = local_ops.reassemble(values, local_ops.to_phases(kernels, scale), kernel_size)
    return local_ops.from_phases(out, scale)

