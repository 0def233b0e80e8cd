"""One wrapper over `timm.create_model(name, features_only=True)`.

It exposes what decoders need as plain numbers (`channels`, `reductions`,
`switch_channels`), dilates through timm's `output_stride`, and, when asked,
captures max-pool switches with forward hooks so decoders can unpool
(DeconvNet, SegNet) at every level where the encoder really max-pools.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

# Families whose timm implementations dilate for output_stride 8/16.
DILATABLE_FAMILIES = ("resnet", "resnext", "resnest", "seresnet", "regnet", "efficientnet",
                      "mobilenetv2", "mobilenetv3", "mixnet", "convnext", "test_resnet",
                      "test_efficientnet", "test_convnext")


def _timm():
    import timm  # imported lazily: ~6 s, not needed to print help
    return timm


def check_encoder(name: str) -> None:
    timm = _timm()
    if timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; closest timm models: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown encoder {name!r}{hint}")


def _pretrained_kwargs(name: str, weights: str | None) -> dict:
    """timm's own pretrained mechanism: 'imagenet' downloads the default tag,
    a path loads a local file (safetensors only) through the same code."""
    if weights is None:
        return {"pretrained": False}
    if weights == "imagenet":
        if os.environ.get("ZOO_OFFLINE") == "1":
            raise RuntimeError(f"encoder_weights='imagenet' for {name!r} needs a download and "
                               "ZOO_OFFLINE=1 is set; use a local weights file or encoder_weights=None")
        return {"pretrained": True}
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"encoder_weights: {weights!r} is neither 'imagenet', None nor an "
                         "existing weights file")
    if path.suffix != ".safetensors":
        raise ValueError(f"encoder_weights: {path} is not a .safetensors file; pickle "
                         "checkpoints are refused (convert a trusted one with "
                         "safetensors.torch.save_file(torch.load(f), 'weights.safetensors'))")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


class Encoder(nn.Module):
    """Features of a timm backbone, shallow to deep.

    `forward(x)` returns `(features, switches)`: `switches` maps the reduction
    a max-pool's input had (the resolution its indices address) to the
    indices, and is empty unless `capture_switches=True`.
    """

    def __init__(self, name: str, *, in_chans: int = 3, output_stride: int = 32,
                 weights: str | None = None, capture_switches: bool = False):
        super().__init__()
        check_encoder(name)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        kwargs = dict(features_only=True, in_chans=in_chans, **_pretrained_kwargs(name, weights))
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        self.name = name
        self.body = self._create(name, weights, output_stride, kwargs)
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())
        self.output_stride = self.reductions[-1]
        if output_stride != 32 and self.output_stride != output_stride:
            raise ValueError(f"encoder {name!r} gave output stride {self.output_stride}, "
                             f"not the {output_stride} asked for")
        self._pools = [m for m in self.body.modules() if type(m) is nn.MaxPool2d]
        self._captured: list[tuple[Tensor, tuple[int, int]]] = []
        self._switch_reductions: list[int] = []
        self.capture_switches = capture_switches
        self.switch_channels: dict[int, int] = {}
        if capture_switches:
            for pool in self._pools:
                pool.return_indices = True
                pool.register_forward_hook(self._keep_switches)
            self.switch_channels = self._probe_switches(in_chans)

    @staticmethod
    def _create(name, weights, output_stride, kwargs):
        timm = _timm()
        try:
            return timm.create_model(name, **kwargs)
        except (AssertionError, TypeError, NotImplementedError) as e:
            if output_stride != 32:
                raise ValueError(
                    f"encoder {name!r} cannot dilate to output_stride={output_stride} ({e or type(e).__name__}); "
                    f"use output_stride=32 or a family that can: {', '.join(DILATABLE_FAMILIES[:9])}"
                ) from e
            raise ValueError(f"encoder {name!r} does not support features_only: {e}") from e
        except RuntimeError as e:
            if weights is not None and "feature" not in str(e).lower():
                raise RuntimeError(f"could not load encoder_weights={weights!r} for {name!r}: {e}. "
                                   "With no network, pass a local .safetensors file or "
                                   "encoder_weights=None") from e
            raise ValueError(f"encoder {name!r} does not support features_only: {e}") from e
        except OSError as e:  # hub download failures surface as OSError subclasses
            raise RuntimeError(f"could not download encoder_weights={weights!r} for {name!r}: {e}. "
                               "With no network, pass a local .safetensors file or "
                               "encoder_weights=None") from e

    def _keep_switches(self, module, inputs, output):
        values, indices = output
        self._captured.append((indices, tuple(inputs[0].shape[-2:])))
        return values

    @torch.no_grad()
    def _probe_switches(self, in_chans: int) -> dict[int, int]:
        """Run a 64x64 input once to learn at which reductions the encoder
        max-pools and how many channels those switches have."""
        was_training = self.training
        self.eval()
        self._captured = []
        self.body(torch.zeros(1, in_chans, 64, 64))
        self.train(was_training)
        # The reduction each pool's input has is fixed: record it by call order, so
        # forward needs no size arithmetic (which would pin sizes under torch.export).
        self._switch_reductions = [64 // size[0] for _, size in self._captured]
        channels = {r: idx.shape[1] for r, (idx, _) in zip(self._switch_reductions, self._captured)}
        self._captured = []
        return channels

    def forward(self, x: Tensor) -> tuple[list[Tensor], dict[int, Tensor]]:
        self._captured = []
        features = self.body(x)
        switches = {r: indices for r, (indices, _) in zip(self._switch_reductions, self._captured)}
        self._captured = []
        return features, switches
