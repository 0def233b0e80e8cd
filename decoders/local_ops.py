"""k x k neighbourhood operators of the content-aware upsamplers, at the low resolution.

CARAFE (Wang et al., ICCV 2019), FADE (Lu et al., ECCV 2022) and SAPA (Lu et
al., NeurIPS 2022) compute every output point of an s-times upsampling from
the k x k low-resolution neighbours of its source pixel. The s^2 output points
of one source pixel (its sub-pixel *phases*) share that neighbourhood, so
everything here works on the low-resolution grid with the phase as a
dimension, ``(N, C, s*s, h, w)``, phase ``p = i*s + j`` for output point
``(s*y + i, s*x + j)``: the order `F.pixel_shuffle` reads.

- ``reassemble(values, weights)[c, p] = sum_k weights[k, p] * values_k[c]``
- ``correlate(queries, values)[k, p] = sum_c queries[c, p] * values_k[c]``

with ``values_k`` the source map shifted to neighbour k (row-major over the
window, zero outside the image). Each is the other's gradient, and both
gradients with respect to ``values`` are one third operator (`_spread`), so
two autograd functions with hand-written backward passes cover all three
methods; they keep only their inputs for the backward pass, never a k*k
times larger unfolded copy.

Why loops: the work is k*k multiply-adds per output element with no weight
shared across pixels, so it cannot become one large matrix product. Each
operator accumulates in place over one dimension (neighbours, channels or
phases) on a band of rows small enough to stay in the CPU's cache. On the
U-Net's last step (16 channels, 180x240 to 360x480, batch 2, one thread)
reassembly forward and backward took 0.44 s against 2.0 s for the
unfold-and-einsum form (shared 2-core CPU, 2026-12-05), and it needs none of
that form's memory. Under tracing (ONNX, torch.export, TorchScript) the
unfold-and-einsum form is used: one graph for every input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from zoo.common.tracing import is_tracing as _tracing

# The accumulator of one band of rows: 4 MiB, past a core's L2 cache but within the shared L3,
# took 15-30% less time than 1 MiB in the U-Net's last step's loops (fewer calls, each longer).
BAND_BYTES = 1 << 22


def to_phases(t: Tensor, scale: int) -> Tensor:
    """(N, C, s*h, s*w) -> (N, C, s*s, h, w): one strided copy (`F.pixel_unshuffle`'s CPU
    kernel took 2.5x as long, and `F.pixel_shuffle`'s 6x, on the U-Net's last step)."""
    n, c, h, w = t.shape[0], t.shape[1], t.shape[-2] // scale, t.shape[-1] // scale
    return t.reshape(n, c, h, scale, w, scale).permute(0, 1, 3, 5, 2, 4).reshape(n, c, scale * scale, h, w)


def from_phases(t: Tensor, scale: int) -> Tensor:
    """(N, C, s*s, h, w) -> (N, C, s*h, s*w): one strided copy, as `to_phases`."""
    n, c, _, h, w = t.shape
    return t.reshape(n, c, scale, scale, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * scale, w * scale)


def inside(h: int, w: int, kernel_size: int, device) -> Tensor:
    """(1, k*k, 1, h, w) bool: which of the k x k neighbours of each pixel lie in the image:
    a row test and a column test, broadcast (an unfold of ones took 2 ms at 360x480)."""
    shifts = torch.arange(kernel_size, device=device) - kernel_size // 2
    ys = torch.arange(h, device=device) + shifts[:, None]  # (k, h): the neighbour's row
    xs = torch.arange(w, device=device) + shifts[:, None]
    rows, cols = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(1, -1, 1, h, w)


def neighbour_softmax(logits: Tensor, kernel_size: int, prior: Tensor | None = None) -> Tensor:
    """Softmax over the k*k neighbours (dim 1) of (N, k*k, s*s, h, w) logits, neighbours
    outside the image excluded (weight exactly 0). ``prior`` (k*k,) is added to the logits
    first. Both go in as one additive bias (the prior inside the image, -inf outside):
    one pass over the logits, and a backward pass that is the softmax's alone."""
    h, w = logits.shape[-2:]
    return (logits + neighbour_bias(h, w, kernel_size, prior, logits)).softmax(1)


def reassemble(values: Tensor, weights: Tensor, kernel_size: int) -> Tensor:
    """(N, C, h, w) values, (N, k*k, s*s, h, w) weights -> (N, C, s*s, h, w)."""
    weights = weights.to(values.dtype)
    if _tracing():
        return torch.einsum("nckhw,nkphw->ncphw", _unfold(values, kernel_size), weights)
    # The loops read rows as contiguous runs: a channels-last input (a convolution's
    # output can be one) would make every multiply-add a strided gather.
    return _Reassemble.apply(values.contiguous(), weights.contiguous(), kernel_size)


def softmax_reassemble(logits: Tensor, values: Sequence[Tensor], kernel_size: int,
                       prior: Tensor | None = None, biased: bool = False) -> tuple[Tensor, ...]:
    """``w = neighbour_softmax(logits, k, prior)`` and ``reassemble(v, w, k)`` of each ``v`` of
    ``values`` in one autograd step: (w, *outs). Its backward pass turns the weights' gradient
    into the logits' in place (``w * (dw - sum_k w dw)``, ``dw`` summed over the values in one
    buffer), so no further k*k-channel buffer is allocated, and it keeps only ``w`` and
    ``values``. ``w`` may feed other operators. Values reassembled apart rather than
    concatenated: on the CPU each output (and its gradient) stays under glibc's 32 MiB, where
    a fresh buffer costs its page faults (the U-Net's last step). ``biased``: the logits carry
    their `neighbour_bias` already (``prior`` is then unused) and are the caller's to spend:
    ``w`` is written over them where their dtype is the values'."""
    if _tracing():
        weights = logits.softmax(1) if biased else neighbour_softmax(logits, kernel_size, prior)
        return (weights, *(reassemble(v, weights, kernel_size) for v in values))
    h, w = logits.shape[-2:]
    bias = None if biased else neighbour_bias(h, w, kernel_size, prior, logits)
    return _SoftmaxReassemble.apply(logits, bias, kernel_size, *(v.contiguous() for v in values))


def neighbour_bias(h: int, w: int, kernel_size: int, prior: Tensor | None, like: Tensor) -> Tensor:
    """(1, k*k, 1, h, w), added to kernel logits before their softmax: ``prior`` (or 0) where the
    neighbour is in the image, -inf outside."""
    mask = inside(h, w, kernel_size, like.device)
    if prior is None:
        bias = torch.zeros((), dtype=like.dtype, device=like.device)
    else:
        bias = prior.to(device=like.device, dtype=like.dtype).reshape(1, -1, 1, 1, 1)
    return torch.where(mask, bias, float("-inf"))


def softmax_backward_(dw: Tensor, w: Tensor) -> Tensor:
    """The backward of a softmax over dim 1, in place on ``dw``: w * (dw - sum_k w dw), the sum
    accumulated one neighbour at a time (no (N, k*k, ...) product is allocated)."""
    total = torch.mul(dw[:, :1], w[:, :1])
    for i in range(1, w.shape[1]):
        total.addcmul_(dw[:, i:i + 1], w[:, i:i + 1])
    return dw.sub_(total).mul_(w)


def correlate(queries: Tensor, values: Tensor, kernel_size: int) -> Tensor:
    """(N, C, s*s, h, w) queries, (N, C, h, w) values -> (N, k*k, s*s, h, w)."""
    queries = queries.to(values.dtype)
    if _tracing():
        return torch.einsum("ncphw,nckhw->nkphw", queries, _unfold(values, kernel_size))
    return _Correlate.apply(queries.contiguous(), values.contiguous(), kernel_size)


def _unfold(values: Tensor, k: int) -> Tensor:
    n, c, h, w = values.shape
    return F.unfold(values, k, padding=k // 2).reshape(n, c, k * k, h, w)


def _bands(h: int, row_bytes: int):
    rows = max(1, BAND_BYTES // max(1, row_bytes))
    return [(y, min(h, y + rows)) for y in range(0, h, rows)]


def _reassemble(values: Tensor, weights: Tensor | None, k: int, out: Tensor | None = None) -> Tensor:
    """Neighbour by neighbour, in place, band by band: out += values_k * weights[k]. ``out``
    (N, C, s*s, h, w), where given, is added to (the sum is written into it). ``weights`` None
    (``out`` given, C = k*k): the softmax over dim 1 of ``out``, each band's taken before the band is added to:
    ``out += reassemble(values, softmax(out))`` with no buffer of ``out``'s size (on the CPU a
    fresh one over 32 MiB costs its page faults)."""
    n, c, h, w = values.shape
    padded = F.pad(values, (k // 2,) * 4)
    fresh = out is None
    out = values.new_empty(n, c, weights.shape[2], h, w) if fresh else out
    for y0, y1 in _bands(h, out[..., :1, :].numel() * out.element_size()):
        band = out[..., y0:y1, :]
        bw = band.softmax(1).to(values.dtype) if weights is None else weights[..., y0:y1, :]
        for i in range(k * k):
            dy, dx = divmod(i, k)
            shifted = padded[:, :, None, y0 + dy:y1 + dy, dx:dx + w]
            if i == 0 and fresh:  # the first product initialises a fresh band
                torch.mul(shifted, bw[:, None, i], out=band)
            else:
                band.addcmul_(shifted, bw[:, None, i])
    return out


def _correlate(queries: Tensor, values: Tensor, k: int, out: Tensor | None = None) -> Tensor:
    """Channel by channel, in place, band by band: out[k] += values_k[c] * queries[c]. ``out``
    (N, k*k, s*s, h, w), where given, is added to (the sum is written into it)."""
    n, c, h, w = values.shape
    padded = F.pad(values, (k // 2,) * 4)
    # (N, C, k, k, h, w): every neighbour as a strided view, nothing copied
    windows = padded.unfold(2, k, 1).unfold(3, k, 1).permute(0, 1, 4, 5, 2, 3)
    fresh = out is None
    out = values.new_empty(n, k * k, queries.shape[2], h, w) if fresh else out
    total = out
    out = out.view(n, k, k, queries.shape[2], h, w)
    for y0, y1 in _bands(h, out[..., :1, :].numel() * out.element_size()):
        band = out[..., y0:y1, :]
        for ch in range(c):
            shifted = windows[:, ch, :, :, None, y0:y1]
            if ch == 0 and fresh:  # the first product initialises a fresh band
                torch.mul(shifted, queries[:, ch, None, None, :, y0:y1], out=band)
            else:
                band.addcmul_(shifted, queries[:, ch, None, None, :, y0:y1])
    return total


def _spread(grads: Tensor, weights: Tensor, k: int) -> Tensor:
    """d/d values of both operators: values_k[c] gathers sum_p grads[c, p] * weights[k, p]."""
    n, c, _, h, w = grads.shape
    r = k // 2
    padded = grads.new_zeros(n, c, h + 2 * r, w + 2 * r)
    for y0, y1 in _bands(h, padded[..., :1, :].numel() * padded.element_size() * 4):
        for i in range(k * k):
            dy, dx = divmod(i, k)
            target = padded[:, :, y0 + dy:y1 + dy, dx:dx + w]
            for p in range(grads.shape[2]):
                target.addcmul_(grads[:, :, p, y0:y1], weights[:, None, i, p, y0:y1])
    return padded[:, :, r:r + h, r:r + w]


class _Reassemble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, weights, k):
        ctx.save_for_backward(values, weights)
        ctx.k = k
        return _reassemble(values, weights, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        values, weights = ctx.saved_tensors
        grad = grad.contiguous()
        d_values = _spread(grad, weights, ctx.k) if ctx.needs_input_grad[0] else None
        d_weights = _correlate(grad, values, ctx.k) if ctx.needs_input_grad[1] else None
        return d_values, d_weights, None


class _Correlate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, values, k):
        ctx.save_for_backward(queries, values)
        ctx.k = k
        return _correlate(queries, values, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        queries, values = ctx.saved_tensors
        grad = grad.contiguous()
        d_queries = _reassemble(values, grad, ctx.k) if ctx.needs_input_grad[0] else None
        d_values = _spread(queries, grad, ctx.k) if ctx.needs_input_grad[1] else None
        return d_queries, d_values, None


class _SoftmaxReassemble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, bias, k, *values):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        dtype = values[0].dtype
        if bias is not None:
            logits = logits + bias  # a fresh sum, which the softmax can overwrite
        elif logits.dtype == dtype:
            ctx.mark_dirty(logits)  # biased logits are the caller's to spend
        else:
            logits = logits.clone()
        # in place: on the CPU a fresh buffer of k*k x s*s channels costs its page faults
        weights = torch.softmax(logits, 1, out=logits).to(dtype)
        ctx.save_for_backward(weights, *values)
        ctx.k, ctx.dtype = k, logits.dtype
        return (weights, *(_reassemble(v, weights, k) for v in values))

    @staticmethod
    @once_differentiable
    def backward(ctx, d_weights, *grads):
        weights, *values = ctx.saved_tensors
        k = ctx.k
        d_values, dw = [], None
        for v, grad, need in zip(values, grads, ctx.needs_input_grad[3:]):
            grad = None if grad is None else grad.contiguous()
            d_values.append(_spread(grad, weights, k) if need and grad is not None else None)
            if ctx.needs_input_grad[0] and grad is not None:
                dw = _correlate(grad, v, k, out=dw)
        if ctx.needs_input_grad[0] and d_weights is not None:
            dw = d_weights.clone() if dw is None else dw.add_(d_weights)
        d_logits = None if dw is None else softmax_backward_(dw, weights).to(ctx.dtype)
        return (d_logits, None, None, *d_values)
