"""Small building blocks shared by every decoder head.

One conv-norm-act block, the spatial-size bookkeeping that lets every head
produce exactly the input's size, and the view of encoder outputs that heads
consume (features by reduction, max-pool switches, the input image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU; `transposed=True` uses a stride-1
    ConvTranspose2d, as DeconvNet's deconvolution layers do."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, transposed: bool = False):
        padding = dilation * (kernel_size - 1) // 2
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        super().__init__(
            conv_cls(in_channels, out_channels, kernel_size, padding=padding,
                     dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def fit_to_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop (bottom/right) or replicate-pad `x` to `size`.

    Encoders downsample with ceil division, so an upsampled map is at most
    `scale - 1` pixels larger than its target; the extra rows and columns lie
    past the image's bottom/right edge and are cropped. Padding covers encoders
    that floor instead.
    """
    th, tw = size
    x = x[..., :th, :tw]  # slicing past the end is a no-op: no branch on sizes (export)
    pad_h, pad_w = th - x.shape[-2], tw - x.shape[-1]
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def stage_sizes(size: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Target sizes of `stages` successive x2 steps ending at `size`
    (coarse to fine), using the ceil division encoders apply on the way down."""
    h, w = size
    # (h + n - 1) // n, not -(-h // n): ONNX's integer Div truncates toward zero
    return [((h + 2 ** k - 1) // 2 ** k, (w + 2 ** k - 1) // 2 ** k) for k in range(stages - 1, -1, -1)]


@dataclass
class EncoderOutput:
    """What a decoder head receives: features with their reductions, max-pool
    switches keyed by the reduction they index into, and the input image
    (the guide at reduction 1)."""

    features: list[Tensor]
    reductions: list[int]
    image: Tensor
    switches: dict[int, Tensor] = field(default_factory=dict)

    def guide(self, reduction: int) -> Tensor | None:
        """The deepest encoder feature at `reduction` (the image at 1)."""
        for feat, r in zip(reversed(self.features), reversed(self.reductions)):
            if r == reduction:
                return feat
        return self.image if reduction == 1 else None

    def size(self, reduction: int) -> tuple[int, int]:
        g = self.guide(reduction)
        if g is not None:
            return tuple(g.shape[-2:])
        h, w = self.image.shape[-2:]
        return (h + reduction - 1) // reduction, (w + reduction - 1) // reduction  # ceil, export-safe
