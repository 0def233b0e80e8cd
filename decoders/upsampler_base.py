"""The upsampler contract's base class (see decoders/upsample.py for the contract, the
registry and the factory): `Upsampler`, the scale-1 `Project`, and `MissingSwitchesError`."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from decoders.blocks import FeatureInfo, fit_to_size


class Upsampler(nn.Module):
    """Base class: maps (N, in_channels, h, w) to (N, out_channels, ~h*scale, ~w*scale)."""

    needs_switches: ClassVar[bool] = False
    needs_guide: ClassVar[bool] = False

    def __init__(self, in_channels: int, out_channels: int, scale: int):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"upsampling scale must be a power of two, got {scale}")
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        self.method = type(self).__name__       # the spec's name, set by make_upsampler
        self.reductions: tuple[int, int] | None = None  # (from, to), set by make_step

    def target(self, x: Tensor, output_size) -> tuple[int, int]:
        if output_size is not None:  # no int(): keeps sizes symbolic for dynamic-shape export
            return output_size[0], output_size[1]
        return x.shape[-2] * self.scale, x.shape[-1] * self.scale

    def describe(self, info: FeatureInfo) -> str:
        """What this step reads besides its input, for `model.upsampling()`."""
        if self.needs_guide and self.reductions:
            r = self.reductions[1]
            return "guide: " + ("the input image" if r == 1 and r not in info.reductions
                                else f"encoder feature at /{r}")
        return ""

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, scale={self.scale}"


class Project(Upsampler):
    """Scale 1 (levels a dilated encoder keeps at one resolution): a 1x1
    projection where channel counts differ, nothing otherwise."""

    def __init__(self, in_channels, out_channels, scale=1):
        super().__init__(in_channels, out_channels, scale)
        self.proj = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x, guide=None, indices=None, output_size=None):
        return fit_to_size(self.proj(x), self.target(x, output_size))


def project(in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1 convolution to `out_channels`, or nothing where the counts already match."""
    return nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)


class MissingSwitchesError(ValueError):
    """An unpooling step without encoder switches; `steps` are the x2 steps (0-based) lacking them."""

    def __init__(self, steps: list[int]):
        super().__init__(f"unpool needs the encoder's max-pool switches for x2 step(s) {steps}")
        self.steps = steps
