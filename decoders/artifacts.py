"""Checkerboard artifacts: how much periodic pattern an upsampler leaves.

A stride-s upsampler computes each output pixel from one of s x s "phases"
(its position inside the s x s cell of the source pixel). When the phases use
different weights, as a randomly initialised transposed convolution does
(Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill
2016), the output is a smooth map plus a pattern that repeats every s pixels.
In the Fourier domain that pattern sits at the aliasing frequencies
(k/s, l/s) cycles per pixel, (k, l) != (0, 0): upsampling by s puts images of
the input spectrum there, and a good interpolator (nearest, bilinear, ICNR
sub-pixel convolution) filters them out, its frequency response vanishing at
exactly those frequencies.

Definition. For a map x of shape (N, C, H, W), H and W cropped (bottom/right)
to multiples of s, each (n, c) plane has its mean removed and is multiplied by
a separable Hann window w (so the image border does not leak energy along the
frequency axes); X = FFT2(w * (x - mean)). With frequencies f = (f_h, f_w) in
cycles per pixel, alias(f) = round(s f) / s and the band

    B = { f : alias(f) != (0, 0) mod 1  and  |f - alias(f)|_inf <= 1 / (4 s) },

the checkerboard score is the share of the map's energy that lies in B:

    score = sum_{n, c} sum_{f in B} |X_nc(f)|^2  /  sum_{n, c} sum_f |X_nc(f)|^2

It lies in [0, 1], does not change when x is scaled, and is 0 for a constant
map. Reference points (64 x 64 maps): white noise scores about the band's
share of the spectrum, 0.21 for s = 2 and 0.30 for s = 4; x2 upsampling of a
smooth field (Gaussian-filtered noise, sigma 2 source pixels) scores 0.02 with
nearest interpolation (its box filter vanishes at the aliasing frequencies
only to first order) and 0.0001 with bilinear; a randomly initialised
transposed convolution on the same field about 0.75. The band half-width
1/(4 s) is half the distance between aliasing frequencies: wide enough to hold
a pattern modulated by smooth content, narrow enough to leave most broadband
detail (edges) out.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from decoders.upsample import make_upsampler, upsampler_class


def _alias_band(h: int, w: int, stride: int, device) -> Tensor:
    """Boolean (h, w) mask of FFT bins within 1/(4 s) of a non-zero aliasing frequency."""
    def axis(n):
        f = torch.fft.fftfreq(n, device=device, dtype=torch.float64)
        k = torch.round(f * stride)
        return k.remainder(stride) != 0, (f - k / stride).abs() <= 1 / (4 * stride)

    alias_h, near_h = axis(h)
    alias_w, near_w = axis(w)
    near = near_h[:, None] & near_w[None, :]
    return near & (alias_h[:, None] | alias_w[None, :])


def checkerboard_energy(x: Tensor, stride: int = 2) -> tuple[Tensor, Tensor]:
    """Per-sample (band energy, total energy), each of shape (N,), summed over
    channels; `checkerboard_score` is their ratio."""
    if x.ndim != 4:
        raise ValueError(f"expected a (N, C, H, W) map, got shape {tuple(x.shape)}")
    if stride < 2:
        raise ValueError(f"stride must be at least 2, got {stride}")
    h, w = (x.shape[-2] // stride) * stride, (x.shape[-1] // stride) * stride
    if h < 4 * stride or w < 4 * stride:
        raise ValueError(f"a {tuple(x.shape[-2:])} map is too small to measure stride {stride}; "
                         f"it needs at least {4 * stride} x {4 * stride}")
    x = x[..., :h, :w].detach().to(torch.float64)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    win = (torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device)[:, None]
           * torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device)[None, :])
    power = torch.fft.fft2(x * win).abs().square()
    band = _alias_band(h, w, stride, x.device)
    return power[..., band].sum(dim=(1, 2)), power.sum(dim=(1, 2, 3))


def checkerboard_per_sample(x: Tensor, stride: int = 2) -> Tensor:
    """The score of each sample, shape (N,); 0 where a sample is constant."""
    band, total = checkerboard_energy(x, stride)
    return torch.where(total > 0, band / total.clamp_min(1e-300), torch.zeros_like(total))


def checkerboard_score(x: Tensor, stride: int = 2) -> float:
    """Share of the energy of x (N, C, H, W) at the stride's aliasing
    frequencies, pooled over the batch (see the module docstring)."""
    band, total = checkerboard_energy(x, stride)
    total = total.sum()
    return float(band.sum() / total) if total > 0 else 0.0


def smooth_field(shape: Sequence[int], sigma: float = 2.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """White noise low-passed by a Gaussian of `sigma` pixels (periodic), each
    (n, c) plane normalised to zero mean and unit variance."""
    noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
    fh = torch.fft.fftfreq(shape[-2], dtype=torch.float64)[:, None]
    fw = torch.fft.fftfreq(shape[-1], dtype=torch.float64)[None, :]
    gain = torch.exp(-2 * (torch.pi * sigma) ** 2 * (fh ** 2 + fw ** 2))
    field = torch.fft.ifft2(torch.fft.fft2(noise) * gain).real
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return (field / field.std(dim=(-2, -1), keepdim=True)).float()


@torch.no_grad()
def upsampler_checkerboard(name: str, channels: int = 16, scale: int = 2, size: int = 32,
                           seeds: Sequence[int] = (0, 1, 2), sigma: float = 2.0,
                           **options) -> float:
    """Mean checkerboard score of `make_upsampler(name, channels, channels, scale)`
    at initialisation on smooth random fields of `size` x `size`, one fresh
    upsampler and field per seed. Every upsampler gets a smooth guide at the
    target resolution; those that need switches (unpool) get the switches of
    2x2 max-pooling that guide, as an encoder's pools would give. The global RNG
    is left untouched."""
    import torch.nn.functional as F


    scores = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            up = make_upsampler(name, channels, channels, scale, **options).eval()
        gen = torch.Generator().manual_seed(seed)
        x = smooth_field((1, channels, size, size), sigma, gen)
        guide = smooth_field((1, channels, size * scale, size * scale), sigma * scale, gen)
        indices = None
        if upsampler_class(name).needs_switches:
            plane, indices = guide, []
            while plane.shape[-1] > size:
                plane, idx = F.max_pool2d(plane, 2, 2, return_indices=True)
                indices.insert(0, idx)
        scores.append(checkerboard_score(up(x, guide=guide, indices=indices), scale))
    return sum(scores) / len(scores)
