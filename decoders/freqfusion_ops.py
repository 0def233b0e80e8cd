"""The arithmetic of `freqfusion` (`decoders/freqfusion.py`, which documents the method): the
neighbour cosine, the sub-pixel-phase convolutions, the offset generator and the resampling, with the
hand-written backward passes that keep its memory near bilinear's."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from decoders import local_ops
from decoders.reassembly import neighbour_softmax, reassemble


def log_hamming(kernel_size: int) -> Tensor:
    """(k*k,) logarithm of the 2-D Hamming window (numpy's, outer product), row-major."""
    window = np.outer(np.hamming(kernel_size), np.hamming(kernel_size))
    return torch.from_numpy(np.log(window)).float().flatten()


def with_neighbour_cosine(x: Tensor, dilation: int = 2) -> Tensor:
    """(N, C + 8, H, W): ``x`` and the cosine similarity of every point to its 8 neighbours at
    ``dilation`` (3 x 3 window, row-major, centre left out), concatenated; neighbours outside
    the map count as 0.

    Hand-written backward pass (`_WithCosine`): it keeps the concatenation (which the
    convolution it feeds keeps too) and the norms, not the unit vectors, the padded copy and
    the eight products autograd would."""
    if local_ops._tracing() or not torch.is_grad_enabled():
        return torch.cat([x, _cosine(x, dilation)], 1)
    return _WithCosine.apply(x, dilation)


def _cosine(x: Tensor, d: int, unit: Tensor | None = None) -> Tensor:
    h, w = x.shape[-2:]
    unit = _unit(x)[0] if unit is None else unit
    padded = F.pad(unit, (d, d, d, d))
    return torch.stack([(unit * padded[..., d + dy:d + dy + h, d + dx:d + dx + w]).sum(1)
                        for dy, dx in _windows(d)], 1)


def conv_to_phases(x: Tensor, weight: Tensor, bias: Tensor | None, scale: int) -> Tensor:
    """``to_phases(conv2d(x, weight, bias, padding=k // 2), s)`` for ``x`` (N, C, s*h, s*w):
    (N, O, s*s, h, w). Each sub-pixel phase is one convolution with stride s from its own
    corner of the padded input: the same products, no shuffle of the (wider) output."""
    r = weight.shape[-1] // 2
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    padded = F.pad(x, (r, r, r, r))
    return torch.stack([F.conv2d(padded[..., i:, j:], weight, bias, stride=scale)[..., :h, :w]
                        for i in range(scale) for j in range(scale)], 2)


def sharpen(guide: Tensor, compress: nn.Conv2d, conv: nn.Conv2d, k: int,
            prior: Tensor) -> tuple[Tensor, Tensor]:
    """The guide's compressed feature ``fine = compress(guide)``, its high-pass logits
    ``high = conv(fine)`` and the sharpened feature
    ``2 fine - reassemble(fine, neighbour_softmax(high, k, 1, prior), k, 1)``: (high, sharp).

    Hand-written backward pass (`_Sharpen`): it keeps the guide (kept by the encoder anyway)
    and recomputes the two convolutions and the softmax, instead of keeping ``fine`` and
    the kernels."""
    if local_ops._tracing() or not torch.is_grad_enabled():
        fine = compress(guide)
        high = conv(fine)
        return high, 2 * fine - reassemble(fine, neighbour_softmax(high, k, 1, prior), k, 1)
    return _Sharpen.apply(guide, compress.weight, compress.bias, conv.weight, conv.bias, prior, k)


def _autocast_state(device: torch.device) -> tuple:
    kind = device.type
    return kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)


def _autocast(state: tuple):
    """The autocast state of a forward pass, for its recomputation in the backward pass."""
    kind, enabled, dtype = state
    return torch.autocast(kind, dtype=dtype, enabled=enabled)


class _Sharpen(torch.autograd.Function):
    @staticmethod
    def _convs(guide, cw, cb, weight, bias):
        fine = F.conv2d(guide, cw, cb)
        return fine, F.conv2d(fine, weight, bias, padding=weight.shape[-1] // 2)

    @staticmethod
    def forward(ctx, guide, cw, cb, weight, bias, prior, k):
        fine, high = _Sharpen._convs(guide, cw, cb, weight, bias)
        kernels = (high.unsqueeze(2) + local_ops.neighbour_bias(*fine.shape[-2:], k, prior, high)).softmax(1)
        sharp = local_ops._reassemble(fine.contiguous(), kernels.to(fine.dtype), k).squeeze(2)
        ctx.save_for_backward(guide, cw, cb, weight, bias, prior)
        ctx.k, ctx.amp = k, _autocast_state(guide.device)
        return high, sharp.mul_(-1).add_(fine, alpha=2)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_high, d_sharp):
        *saved, prior = ctx.saved_tensors
        k = ctx.k
        inputs = [t.detach().requires_grad_(need) for t, need in zip(saved, ctx.needs_input_grad[:5])]
        with torch.enable_grad(), _autocast(ctx.amp):
            fine, high = _Sharpen._convs(*inputs)
        d_fine = None
        if d_sharp is not None:
            with torch.no_grad(), _autocast(ctx.amp):
                kernels = (high.unsqueeze(2) + local_ops.neighbour_bias(*fine.shape[-2:], k, prior, high)).softmax(1)
            with torch.no_grad():
                values = fine.detach().contiguous()
                kernels = kernels.to(values.dtype)
                d_r = d_sharp.to(values.dtype).neg().unsqueeze(2).contiguous()  # d reassemble = -d sharp
                d_fine = local_ops._spread(d_r, kernels, k).add_(d_sharp, alpha=2)
                d_logits = local_ops.softmax_backward_(local_ops._correlate(d_r, values, k), kernels).squeeze(2)
                d_logits = d_logits.to(high.dtype)
                d_high = d_logits if d_high is None else d_logits.add_(d_high)
        pairs = [(o, g) for o, g in ((high, d_high), (fine, d_fine)) if g is not None]
        wanted = [t for t in inputs if t.requires_grad]
        if not pairs or not wanted:
            return (None,) * 7
        found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                         allow_unused=True))
        return tuple(next(found) if t.requires_grad else None for t in inputs) + (None, None)


def first_lowpass(fine: Tensor, coarse: Tensor, conv: nn.Conv2d, k: int, scale: int,
                  prior: Tensor) -> Tensor:
    """The low-pass logits (N, k*k, s*s, h, w) with their `neighbour_bias` (``prior``, -inf
    outside the image): the guide's, ``low = to_phases(conv(fine), s)``, plus the coarse
    feature's, ``conv(coarse)``, reassembled by ``neighbour_softmax(low, k, prior)``, plus the bias.

    Hand-written backward pass (`_FirstLowpass`): it keeps ``fine`` and ``coarse`` (kept by
    other steps anyway) and recomputes the two convolutions and the softmax, instead of
    keeping the k*k-channel kernels at the fine resolution and the coarse logits."""
    if local_ops._tracing() or not torch.is_grad_enabled():
        low = conv_to_phases(fine, conv.weight, conv.bias, scale)
        low = low + local_ops.neighbour_bias(*coarse.shape[-2:], k, prior, low)
        return low + local_ops.reassemble(conv(coarse), low.softmax(1), k)
    return _FirstLowpass.apply(fine, coarse, conv.weight, conv.bias, prior, k, scale)


class _FirstLowpass(torch.autograd.Function):
    @staticmethod
    def _logits(fine, coarse, weight, bias, scale):
        return (conv_to_phases(fine, weight, bias, scale),
                F.conv2d(coarse, weight, bias, padding=weight.shape[-1] // 2))

    @staticmethod
    def _biased(low, k, prior):
        """``low`` plus its neighbour bias, in place: the logits of 25 x s*s channels are
        the largest tensors of the step, and each fresh one costs its page faults."""
        return low.add_(local_ops.neighbour_bias(*low.shape[-2:], k, prior, low))

    @staticmethod
    def forward(ctx, fine, coarse, weight, bias, prior, k, scale):
        low, values = _FirstLowpass._logits(fine, coarse, weight, bias, scale)
        low = _FirstLowpass._biased(low, k, prior)
        ctx.save_for_backward(fine, coarse, weight, bias, prior)
        ctx.k, ctx.scale, ctx.amp = k, scale, _autocast_state(fine.device)
        # the kernels a band of rows at a time, each band's reassembly added to its logits
        return local_ops._reassemble(values.contiguous(), None, k, out=low)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        fine, coarse, weight, bias, prior = ctx.saved_tensors
        k = ctx.k
        inputs = [t.detach().requires_grad_(need) for t, need in
                  zip((fine, coarse, weight, bias), ctx.needs_input_grad[:4])]
        with torch.enable_grad(), _autocast(ctx.amp):
            low, values = _FirstLowpass._logits(*inputs, ctx.scale)
        with torch.no_grad(), _autocast(ctx.amp):
            # the graph of ``low`` is what autograd.grad needs below, not its values: the
            # kernels overwrite them (no fresh buffer of 25 x s*s channels)
            biased = _FirstLowpass._biased(low.detach(), k, prior)
            first = torch.softmax(biased, 1, out=biased)
        with torch.no_grad():
            first = first.to(values.dtype)
            d_out = grad.to(values.dtype).contiguous()
            dv = local_ops._spread(d_out, first, k)
            dw = local_ops._correlate(d_out, values.detach().contiguous(), k)
            d_low = local_ops.softmax_backward_(dw, first).to(low.dtype).add_(grad)
        outputs, grads = zip(*[(o, g) for o, g in ((low, d_low), (values, dv)) if o.requires_grad])
        wanted = [t for t in inputs if t.requires_grad]
        found = iter(torch.autograd.grad(outputs, wanted, grads, allow_unused=True))
        return tuple(next(found) if t.requires_grad else None for t in inputs) + (None, None, None)


def _windows(d: int):
    """The 8 neighbour offsets (dy, dx) at dilation d, row-major, centre left out."""
    return [((i - 1) * d, (j - 1) * d) for i in range(3) for j in range(3) if (i, j) != (1, 1)]


def _unit(x: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """``F.normalize(x, dim=1, eps=eps)`` and its denominator ``max(|x|, eps)``."""
    denom = x.square().sum(1, keepdim=True).sqrt().clamp_min(eps)
    return x / denom, denom


class _WithCosine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, d):
        unit, denom = _unit(x)
        out = torch.cat([x, _cosine(x, d, unit)], 1)
        ctx.save_for_backward(out, denom)
        ctx.d = d
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        out, denom = ctx.saved_tensors
        d, c = ctx.d, out.shape[1] - 8
        x, d_copy, grad = out[:, :c], grad[:, :c], grad[:, c:]  # d_copy: through x's own channels
        h, w = x.shape[-2:]
        unit = x / denom
        padded = F.pad(unit, (d, d, d, d))
        gpad = F.pad(grad, (d, d, d, d))
        offsets = _windows(d)
        d_unit = torch.zeros_like(unit)
        for m, (dy, dx) in enumerate(offsets):
            # sims_m(q) = <u(q), u(q + d_m)>: u(q + d_m) meets g_m(q), and g_m'(q + d_m) with m'
            # the opposite neighbour (q + d_m sees q as its neighbour m')
            opposite = 7 - m
            weight = grad[:, m] + gpad[:, opposite, d + dy:d + dy + h, d + dx:d + dx + w]
            d_unit.addcmul_(padded[..., d + dy:d + dy + h, d + dx:d + dx + w], weight.unsqueeze(1))
        # through u = x / max(|x|, eps): project out the radial part where |x| > eps
        radial = (unit * d_unit).sum(1, keepdim=True) * (denom > 1e-8)
        return (d_unit - unit * radial).div_(denom).add_(d_copy), None


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
        # one convolution of each feature and its similarities, at the feature's resolution
        low = self.low(with_neighbour_cosine(coarse))
        high = local_ops.to_phases(self.high(with_neighbour_cosine(fine)), s).flatten(1, 2)  # (c, phase)
        # unshuffled channel (xy, group, phase) = (c, phase) with c = xy * g + group, as `low`'s
        offset, direct = (low + high).chunk(2, 1)  # offsets, direct scales
        return offset * torch.sigmoid(direct) + self.init_pos


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
        # channel (xy, group, i*s + j) at (y, x) -> grid[(n, group), s*y + i, s*x + j, xy]: each of
        # x and y shuffled to the fine grid, then interleaved (one gather of pairs from two planes far
        # apart took a third longer, forward and backward)
        planes = coords.view(n, 2, groups, s * s, h, w).unbind(1)
        grid = torch.stack([local_ops.from_phases(p, s) for p in planes], -1).view(n * groups, s * h, s * w, 2)
        out = F.grid_sample(feature.float().reshape(n * groups, c // groups, s * h, s * w), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)
    return out.to(feature.dtype).view(n, c, s * h, s * w)
