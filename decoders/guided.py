"""Upsamplers that read the encoder feature at the target resolution, pure PyTorch.

- `fade`: FADE, "Fusing the Assets of Decoder and Encoder for Task-Agnostic
  Upsampling" (Lu, Liu, Fu & Cao, ECCV 2022).
- `sapa`: SAPA, "Similarity-Aware Point Affiliation for Feature Upsampling"
  (Lu, Liu, Ye, Fu, Liu & Cao, NeurIPS 2022).

Both are reassembly operators: every output point is a weighted sum of the
k x k low-resolution neighbours of its source pixel (the pixel it falls in,
``(y // s, x // s)``), with weights that sum to 1, predicted per output point
from the encoder feature there (the guide) and the decoder feature. They
declare ``needs_guide``; heads hand them the guide and its channel count
(``guide_channels``). Used on their own, the guide is taken to be as wide as
the input.

One deliberate difference from the authors' code: neighbours outside the
image take no weight (they are left out of the softmax). The reference
reassembly zero-pads, so near the border part of the weight lands on zeros
and a constant map darkens there; here a constant stays constant everywhere
and every output is a convex combination of real features.

Cost. Nothing k x k times larger than a feature map is materialised: kernels
and similarities live at the input's resolution with the s*s sub-pixel phases
as a dimension, and reassembly and similarity run in `decoders.local_ops`.
Where a feature is narrower than the embedding (the image, three channels,
guides the last step), the two linear maps that read it are composed into
one: FADE's 1x1 compression and 3x3 kernel convolution become one 3x3
convolution of the guide (of the decoder feature likewise), and SAPA's query
projection moves onto the keys at the low resolution
(``q . key = [G, 1] . [W_q, b_q]^T key``; also where the guide is as wide as
the embedding, which spares the full-resolution 1x1 convolution), so the
full-resolution work scales with the guide's channels, not the embedding's.
The parameters, their names and the function computed are the authors' (tests
hold both to the original unfold-and-einsum form, tests/decoders/test_upsample_speed.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import fit_to_size
from decoders.local_ops import correlate, from_phases, neighbour_softmax, reassemble, to_phases
from decoders.upsample import Upsampler, project, register_upsampler


def _guide(guide: Tensor | None, x: Tensor, scale: int, name: str) -> Tensor:
    """The guide fitted to the full s*h x s*w grid (replicate-padded past the target)."""
    if guide is None:
        raise ValueError(f"{name} needs a guide: the encoder feature at the target resolution")
    th, tw = x.shape[-2] * scale, x.shape[-1] * scale
    guide = guide[..., :th, :tw]
    # Padding by amounts that may be 0, without a branch on sizes: exports stay dynamic.
    return F.pad(guide, (0, tw - guide.shape[-1], 0, th - guide.shape[-2]), mode="replicate")


@register_upsampler("fade")
class FadeUpsample(Upsampler):
    """FADE: a gate between the encoder feature and a CARAFE-style reassembly of
    the decoder feature, with kernels generated from both.

    With ``G`` the guide (encoder, target resolution), ``X`` the decoder input
    and ``up`` nearest upsampling by s:

    - kernels: ``softmax_k( conv(C_g G) + up(conv(C_x X)) )``, one k x k kernel
      per output point. ``conv`` is one 3x3 convolution applied to both
      compressed features ("semi-shift convolution": the decoder's low-res
      window, shifted by the encoder's position inside it);
    - gate: ``sigmoid(up(conv1x1(X)))``, one value in [0, 1] per output point;
    - output: ``gate * A(G) + (1 - gate) * reassemble(P(X), kernels)``, ``A`` and
      ``P`` 1x1 projections to ``out_channels`` where channel counts differ.

    At initialisation the gate convolution is zero, so the gate is exactly 1/2,
    and the kernel convolution is near zero (std 1e-3, as CARAFE), so kernels
    are near uniform: the output starts as half the guide and half the local
    k x k mean of the decoder feature.
    """

    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None,
                 embedding: int = 64, up_kernel: int = 5, encoder_kernel: int = 3):
        super().__init__(in_channels, out_channels, scale)
        guide_channels = guide_channels or in_channels
        self.k = up_kernel
        self.compress_guide = nn.Conv2d(guide_channels, embedding, 1)
        self.compress_x = nn.Conv2d(in_channels, embedding, 1, bias=False)
        self.kernel_conv = nn.Conv2d(embedding, up_kernel ** 2, encoder_kernel,
                                     padding=encoder_kernel // 2)
        self.gate_conv = nn.Conv2d(in_channels, 1, 1)
        self.project = project(in_channels, out_channels)
        self.align = project(guide_channels, out_channels)
        for conv in (self.compress_guide, self.compress_x):
            nn.init.xavier_uniform_(conv.weight)
        nn.init.normal_(self.kernel_conv.weight, std=0.001)
        for conv in (self.gate_conv, self.compress_guide, self.kernel_conv):
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.gate_conv.weight)

    def gate(self, x: Tensor) -> Tensor:
        """(N, 1, s*h, s*w) in [0, 1]."""
        return torch.sigmoid(F.interpolate(self.gate_conv(x), scale_factor=self.scale, mode="nearest"))

    def _composed(self, compress: nn.Conv2d, t: Tensor) -> Tensor:
        """``kernel_conv(compress(t))``; where ``t`` is narrower than the embedding, as one
        3x3 convolution of ``t`` (and of a ones plane that carries the 1x1's bias, zero past
        the border as the compressed map's zero padding is)."""
        bias_free = compress.bias is None
        if compress.in_channels + (not bias_free) >= compress.out_channels:
            return self.kernel_conv(compress(t))
        weight = torch.einsum("oekl,ec->ockl", self.kernel_conv.weight, compress.weight[:, :, 0, 0])
        if not bias_free:
            bias = torch.einsum("oekl,e->okl", self.kernel_conv.weight, compress.bias)
            t = torch.cat([t, t.new_ones(t.shape[0], 1, *t.shape[-2:])], 1)
            weight = torch.cat([weight, bias[:, None]], 1)
        return F.conv2d(t, weight, self.kernel_conv.bias, padding=self.kernel_conv.padding)

    def kernels(self, x: Tensor, guide: Tensor) -> Tensor:
        """(N, k*k, s*s, h, w) reassembly kernels; ``guide`` at s*h x s*w. The decoder's
        part is one value per source pixel: nearest upsampling is a broadcast over phases."""
        low = self._composed(self.compress_x, x)
        logits = to_phases(self._composed(self.compress_guide, guide), self.scale) + low[:, :, None]
        return neighbour_softmax(logits, self.k)

    def forward(self, x, guide=None, indices=None, output_size=None):
        g = _guide(guide, x, self.scale, "fade")
        mixed = from_phases(reassemble(self.project(x), self.kernels(x, g), self.k), self.scale)
        aligned, gate = self.align(g), self.gate(x)
        # gate * A(G) + (1 - gate) * mixed; under autocast the parts may differ in dtype
        dtype = torch.promote_types(torch.promote_types(mixed.dtype, aligned.dtype), gate.dtype)
        out = torch.lerp(mixed.to(dtype), aligned.to(dtype), gate.to(dtype))
        return fit_to_size(out, self.target(x, output_size))


@register_upsampler("sapa")
class SapaUpsample(Upsampler):
    """SAPA: each output point takes the k x k low-res neighbours of its source
    pixel, weighted by the softmax of the similarity between its own encoder
    feature and theirs.

    ``q = W_q LN(G)`` at every output point, ``key = W_k LN(X)`` at every
    low-res pixel (LN: layer norm over channels; W: 1x1 projections to
    ``embedding`` channels), ``weights = softmax_k(q . key_k)`` over the in-image
    neighbours, and the output is ``sum_k weights_k P(X)_k`` (``P`` a 1x1
    projection where channel counts differ, linear, so the output is still a
    convex combination of projected neighbours). A point whose encoder feature
    resembles one side of an edge takes its value from that side: boundaries
    stay sharp, regions stay smooth.

    At initialisation the projections are small (truncated normal, std 0.02,
    as the authors'), so similarities are near 0 and the weights near uniform:
    the output starts close to the local k x k mean of the decoder feature,
    nearest-upsampled. The layer norms are timm's LayerNorm2d (eps 1e-6, the
    authors' nn.LayerNorm has 1e-5): the same to about 1e-5 on deep features,
    up to 3e-2 when the guide is the 3-channel image.
    """

    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None,
                 embedding: int = 64, up_kernel: int = 5):
        super().__init__(in_channels, out_channels, scale)
        from timm.layers import LayerNorm2d
        guide_channels = guide_channels or in_channels
        self.k = up_kernel
        self.norm_guide, self.norm_x = LayerNorm2d(guide_channels), LayerNorm2d(in_channels)
        self.query = nn.Conv2d(guide_channels, embedding, 1)
        self.key = nn.Conv2d(in_channels, embedding, 1)
        for conv in (self.query, self.key):
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
        self.project = project(in_channels, out_channels)

    def weights(self, x: Tensor, guide: Tensor) -> Tensor:
        """(N, k*k, s*s, h, w) affinities; ``guide`` at s*h x s*w."""
        g, key = self.norm_guide(guide), self.key(self.norm_x(x))
        if self.query.in_channels <= self.query.out_channels:
            # q . key = [g, 1] . ([W_q, b_q]^T key): the projection moves to the low-res keys,
            # and the similarity contracts over the guide's channels (+1), not the embedding's
            to_guide = torch.cat([self.query.weight[:, :, 0, 0], self.query.bias[:, None]], 1)
            key = F.conv2d(key, to_guide.t()[:, :, None, None])
            queries = torch.cat([g, g.new_ones(g.shape[0], 1, *g.shape[-2:])], 1)
        else:
            queries = self.query(g)
        return neighbour_softmax(correlate(to_phases(queries, self.scale), key, self.k), self.k)

    def forward(self, x, guide=None, indices=None, output_size=None):
        g = _guide(guide, x, self.scale, "sapa")
        out = from_phases(reassemble(self.project(x), self.weights(x, g), self.k), self.scale)
        return fit_to_size(out, self.target(x, output_size))
