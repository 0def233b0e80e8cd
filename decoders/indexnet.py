"""`guided_indexnet`: IndexNet's decoder-side learned index, pure PyTorch.

IndexNet, "Indices Matter: Learning to Index for Deep Image Matting" (Lu, Dai,
Shen & Xu, ICCV 2019). An index block reads the encoder feature *before* a x2
downsampling and predicts, for every output position of each 2x2 window, an
index; the encoder pools with the softmax-normalised index (a learned
generalisation of max-pooling switches) and the decoder upsamples with the
sigmoid one: ``out = sigmoid(index) * nearest(x)``.

What this zoo does with timm encoders. Their downsampling (strided
convolutions, max-pools) cannot be swapped for the learned index pooling
without retraining them, so only the decoder half is here: the index block
reads the guide (the encoder feature at the step's target resolution, the
feature the paper's index block reads), and its sigmoid index gates the
nearest-upsampled decoder feature. The encoder keeps its own downsampling and
the softmax (encoder) index is not computed. Hence the name: `guided_indexnet`,
as `guided_unpool` is named apart from `unpool`; results are those of
IndexNet's decoder index on an unchanged encoder, not of IndexNet.

Reference choices followed (the authors' code, `hlindex.py`):
- index blocks: ``index="holistic"`` (default; one index map per sub-pixel
  position, shared by all channels, so any widths fit) or ``"depthwise"``
  (the many-to-one, M2O, variant: one index per output channel and
  position, each from all guide channels). The one-to-one (O2O) variant needs
  the guide and the decoder feature to be equally wide, which the zoo's heads
  do not guarantee; it is not offered.
- ``nonlinear=True`` (default, as the released matting model): convolution,
  BatchNorm, ReLU6, then a 1x1 convolution (per position for depthwise);
  ``False``: one convolution.
- ``context=True`` (default, as the released model): a 2s x 2s window with
  stride s (4x4 at x2, the paper's "context"); ``False``: s x s.
- normalisation: sigmoid for the decoder (the paper's ``idx_de``); the
  encoder's softmax-of-sigmoid is not used here (see above).
- scale s > 2 (PSPNet, FCN): one index block with stride s and s^2 positions,
  the paper's x2 block generalised, rather than a chain of x2 steps whose
  intermediate guides the head does not have.

At initialisation the convolutions are He-normal with fan-out (the authors'
``normal(0, sqrt(2 / (k*k*out)))``), BatchNorm is the identity: each output
is its source pixel's value scaled by a random index in (0, 1).

Cost: the index block runs at the input's (low) resolution, with stride s on
the guide; the only full-resolution tensor is the output itself.

ONNX: exports at any size (U-Net, equal to eager at 64x64, 96x128 and 97x131).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from decoders.blocks import fit_to_size
from decoders.reassembly import guide_grid
from decoders.upsample import Upsampler, project, register_upsampler


def _he_fan_out(conv: nn.Conv2d) -> None:
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))


@register_upsampler("guided_indexnet")
class GuidedIndexNetUpsample(Upsampler):
    """``out = sigmoid(index(G)) * nearest(P(x))``: ``G`` the guide on the s*h x s*w grid,
    ``P`` a 1x1 projection to ``out_channels`` where widths differ (run at the low
    resolution: it commutes with nearest upsampling), ``index`` the block above."""

    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None,
                 index: str = "holistic", nonlinear: bool = True, context: bool = True):
        super().__init__(in_channels, out_channels, scale)
        if index not in ("holistic", "depthwise"):
            raise ValueError(f"guided_indexnet index must be holistic or depthwise, got {index!r}")
        guide_channels = guide_channels or in_channels
        s = scale
        self.maps = 1 if index == "holistic" else out_channels  # index maps per position
        kernel, padding = (2 * s, s // 2) if context else (s, 0)
        positions = s * s * self.maps
        hidden = 2 * guide_channels if index == "holistic" else positions
        first = nn.Conv2d(guide_channels, hidden if nonlinear else positions, kernel, stride=s,
                          padding=padding, bias=False)
        layers = [first]
        if nonlinear:
            groups = 1 if index == "holistic" else s * s  # depthwise: one 1x1 per position
            layers += [nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                       nn.Conv2d(hidden, positions, 1, groups=groups, bias=False)]
        self.index_block = nn.Sequential(*layers)
        for m in self.index_block:
            if isinstance(m, nn.Conv2d):
                _he_fan_out(m)
        self.project = project(in_channels, out_channels)

    def index(self, guide: Tensor) -> Tensor:
        """(N, maps, h, s, w, s) decoder index in (0, 1), ``guide`` on the s*h x s*w grid."""
        z = self.index_block(guide)
        n, _, h, w = z.shape
        s = self.scale
        if self.maps > 1:  # (position, channel) -> (channel, position), as PixelShuffle reads it
            z = z.reshape(n, s * s, self.maps, h, w).transpose(1, 2)
        return torch.sigmoid(z.reshape(n, self.maps, s, s, h, w).permute(0, 1, 4, 2, 5, 3))

    def forward(self, x, guide=None, indices=None, output_size=None):
        n, _, h, w = x.shape
        s = self.scale
        idx = self.index(guide_grid(guide, h, w, s, "guided_indexnet"))
        values = self.project(x)
        # nearest upsampling as a broadcast: no upsampled copy of x is made
        c = self.out_channels
        out = values.reshape(n, c, h, 1, w, 1) * idx.to(values.dtype)
        return fit_to_size(out.reshape(n, c, h * s, w * s), self.target(x, output_size))
