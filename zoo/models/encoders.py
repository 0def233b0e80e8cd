"""One wrapper over `timm.create_model(name, features_only=True)`.

It exposes what decoders need as plain numbers (`info`: channels,
reductions, where the encoder max-pools), dilates through timm's
`output_stride`, and on request captures, for each max-pool, its switches
(indices into the pool's input plane: unpooling in DeconvNet and SegNet) and
its output (FCN's pool3 / pool4 skips). Every max-pool module type timm uses
is covered (`nn.MaxPool2d` and its subclasses such as timm's `MaxPool2dSame`,
whose 'same' padding is undone in the indices). Captures live in a per-call
context variable, never on the module, so one encoder serves concurrent
calls (threads, `nn.DataParallel` replicas) safely.

Plain ViTs (timm's VisionTransformer: ViT, DeiT, DINOv2), which have one
token grid and no `features_only` pyramid, get ViTDet's simple feature
pyramid over their tokens (`zoo/models/vit.py`), at any input size; `patch_size`
reports their patch (None for convolutional encoders).

With ImageNet weights and a VGG, timm's classifier MLP (`pre_logits`: fc6
7x7 and fc7 1x1 convolutions) is kept in `pretrained_fc` for heads that
have fc6/fc7 (FCN, DeconvNet) to load, as the papers start from them.
"""
from __future__ import annotations

import contextvars
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import EncoderOutput, FeatureInfo
from zoo.common.env import offline
from zoo.common.names import close_matches
from zoo.models.vit import create_vit_pyramid, is_plain_vit

# Families whose timm implementations dilate for output_stride 8/16.
DILATABLE_FAMILIES = ("resnet", "resnext", "resnest", "seresnet", "regnet", "efficientnet",
                      "mobilenetv2", "mobilenetv3", "mixnet", "convnext", "test_resnet",
                      "test_efficientnet", "test_convnext")
# Windowed transformers whose timm features take one fixed size and NHWC by default:
# built with dynamic_img_size (any multiple of the patch; windows padded inside timm),
# read through forward_intermediates (NCHW), the input zero-padded to whole patches.
WINDOWED_MODULES = ("swin_transformer",)
# timm modules whose residual blocks zero-initialise their last norm (`zero_init_last`,
# each block starts as the identity). From scratch the zoo turns it off, as torchvision's
# ResNet (smp's encoder) has it: on CamVid, U-Net/ResNet-18's training loss over iterations
# 101-150 fell from 0.613 to 0.609 with it off (with 0.646 -> 0.633 before the classifier's
# Xavier init; `segzoo benchmark --learning`, docs/parity/README.md). Pretrained weights
# overwrite the norms either way.
NO_ZERO_INIT_MODULES = ("resnet",)


class EncoderWeightsError(RuntimeError):
    """Encoder weights that cannot be had (no network, offline mode, unreadable file): a
    user's setting to change, not a bug, so command lines print it as one line."""

NO_NETWORK_HINT = ("pass model.encoder_weights=null in a recipe (encoder_weights=None in Python) "
                   "or a local .safetensors file")

# What the current forward call asks the pool hooks to keep: {"switches": {}, "pooled": {}}.
_CAPTURE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("zoo_pool_capture", default=None)


def _timm():
    import timm  # imported lazily: ~6 s, not needed to print help
    return timm


def _in_modules(name: str, modules) -> bool:
    from timm.models import is_model_in_modules
    return is_model_in_modules(name, list(modules))


def check_encoder(name: str) -> None:
    timm = _timm()
    if timm.is_model(name):
        return
    names = timm.list_models()
    close = close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; closest timm models: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown encoder {name!r}{hint}")


# ----------------------------------------------------------------------------- weights

def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face endpoint timm downloads from accepts a TCP connection."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{host}:{port}: {e.strerror or e}"


def _cached_in_hub(name: str) -> bool:
    """Whether timm's default weights for `name` are already in the Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        cfg = _timm().models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    except Exception:  # an unknown cfg or an old huggingface_hub: let timm decide
        return False


def _offline_setting() -> str | None:
    """The variable that puts this process offline: ZOO_OFFLINE (zoo.hub.download's reading)
    or HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (huggingface_hub's own reading)."""
    if offline():
        return f"ZOO_OFFLINE={os.environ['ZOO_OFFLINE']}"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if getattr(constants, "HF_HUB_OFFLINE", False):
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        return f"{var}={os.environ.get(var, '1')}"
    return None


def _pretrained_kwargs(name: str, weights: str | None) -> dict:
    """timm's own pretrained mechanism: 'imagenet' downloads the default tag,
    a path loads a local file (safetensors only) through the same code. Without
    network a download fails in a few seconds with the override to use, not
    after timm's minute of retries."""
    if weights is None:
        return {"pretrained": False}
    if weights == "imagenet":
        if _cached_in_hub(name):
            return {"pretrained": True}
        setting = _offline_setting()
        if setting:
            raise EncoderWeightsError(f"encoder_weights='imagenet' for {name!r} needs a download and "
                                      f"offline mode is set ({setting}); {NO_NETWORK_HINT}")
        ok, why = _hub_reachable()
        if not ok:
            raise EncoderWeightsError(f"encoder_weights='imagenet' for {name!r} downloads timm's "
                                      f"weights, but the hub cannot be reached ({why}); {NO_NETWORK_HINT}")
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


# ----------------------------------------------------------------------------- max-pools

def _is_same_pool(module: nn.Module) -> bool:
    from timm.layers.pool2d_same import MaxPool2dSame
    return isinstance(module, MaxPool2dSame)


def pool_indices(module: nn.MaxPool2d, x: Tensor) -> Tensor:
    """The switches `module` chose for input `x`: flat indices into x's (H, W) plane."""
    if _is_same_pool(module):
        from timm.layers.padding import pad_same
        padded = pad_same(x, module.kernel_size, module.stride, module.dilation, value=-float("inf"))
        _, idx = F.max_pool2d(padded, module.kernel_size, module.stride, 0, module.dilation,
                              module.ceil_mode, return_indices=True)
        pw = padded.shape[-1]
        top = (padded.shape[-2] - x.shape[-2]) // 2
        left = (pw - x.shape[-1]) // 2
        # 'same' padding is -inf, so no maximum lies in it: shift back into x's plane.
        return (idx // pw - top) * x.shape[-1] + (idx % pw - left)
    _, idx = F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                          module.ceil_mode, return_indices=True)
    return idx


def _pool_modules(body: nn.Module) -> dict[str, nn.MaxPool2d]:
    """Max-pools whose forward we can reproduce (plain MaxPool2d and timm's 'same' one)."""
    return {name: m for name, m in body.named_modules()
            if isinstance(m, nn.MaxPool2d)
            and (type(m).forward is nn.MaxPool2d.forward or _is_same_pool(m))}


class Encoder(nn.Module):
    """Features of a timm backbone, shallow to deep; `forward(x)` returns an `EncoderOutput`."""

    def __init__(self, name: str, *, in_chans: int = 3, output_stride: int = 32,
                 weights: str | None = None, capture_switches: bool = False,
                 capture_pools: bool = False, vit_blocks=None):
        super().__init__()
        check_encoder(name)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.name = name
        self.in_chans = in_chans
        self.patch_size: int | None = None
        self._pad_to: int | None = None  # input padded to a multiple of this (windowed transformers)
        if is_plain_vit(name):
            self._build_vit(name, in_chans, output_stride, weights, capture_switches, vit_blocks)
        else:
            if vit_blocks is not None:
                raise ValueError(f"vit_blocks is for plain ViT encoders; {name!r} is not one")
            kwargs = dict(features_only=True, in_chans=in_chans, **_pretrained_kwargs(name, weights))
            if weights is None and _in_modules(name, NO_ZERO_INIT_MODULES):
                kwargs["zero_init_last"] = False
            if output_stride != 32:
                kwargs["output_stride"] = output_stride
            windowed = _in_modules(name, WINDOWED_MODULES)
            if windowed:
                kwargs.update(dynamic_img_size=True, feature_cls="getter")
            self.body = self._create(name, weights, output_stride, kwargs)
            self.channels: list[int] = list(self.body.feature_info.channels())
            self.reductions: list[int] = list(self.body.feature_info.reduction())
            if windowed:
                self.patch_size = self._pad_to = self.reductions[0]
        self.output_stride = self.reductions[-1]
        if output_stride != 32 and self.output_stride != output_stride:
            raise ValueError(f"encoder {name!r} gave output stride {self.output_stride}, "
                             f"not the {output_stride} asked for")
        self.capture_switches, self.capture_pools = capture_switches, capture_pools
        self._pool_reductions: dict[str, tuple[int, int]] = {}  # name -> (input, output reduction)
        self._pool_channels: dict[str, int] = {}
        pools = _pool_modules(self.body)
        for pool_name, pool in pools.items():
            pool.register_forward_hook(self._hook(pool_name))
        if pools:
            self._probe_pools(in_chans)
        self.pretrained_fc = self._load_pretrained_fc(name, weights, in_chans)

    def _build_vit(self, name, in_chans, output_stride, weights, capture_switches, blocks) -> None:
        if capture_switches:
            raise ValueError(
                f"upsample=unpool needs the encoder's max-pool switches, but {name!r} is a plain "
                "ViT: a patch embedding and attention blocks, no max-pool to take them from. Use "
                "upsample='guided_unpool' (switches from the 2x2 maxima of the guide feature at "
                "each step's target) or another upsampler")
        self.body = create_vit_pyramid(name, in_chans=in_chans, output_stride=output_stride,
                                       pretrained_kwargs=_pretrained_kwargs(name, weights),
                                       blocks=blocks)
        self.channels, self.reductions = list(self.body.channels), list(self.body.reductions)
        self.patch_size = self.body.patch_size

    @staticmethod
    def _create(name, weights, output_stride, kwargs):
        timm = _timm()
        try:
            return timm.create_model(name, **kwargs)
        except (AssertionError, TypeError, NotImplementedError) as e:
            if output_stride != 32:
                detail = str(e).strip() or f"timm's {name} has no dilated form"
                raise ValueError(
                    f"encoder {name!r} cannot dilate to output_stride={output_stride} ({detail}); "
                    f"use output_stride=32 or a family that can: {', '.join(DILATABLE_FAMILIES[:9])}"
                ) from e
            raise ValueError(f"encoder {name!r} does not support features_only: {e}") from e
        except RuntimeError as e:
            if weights is not None and "feature" not in str(e).lower():
                raise EncoderWeightsError(f"could not load encoder_weights={weights!r} for {name!r}: {e}; "
                                   f"{NO_NETWORK_HINT}") from e
            raise ValueError(f"encoder {name!r} does not support features_only: {e}") from e
        except OSError as e:  # hub download failures surface as OSError subclasses
            raise EncoderWeightsError(f"could not download encoder_weights={weights!r} for {name!r}: {e}; "
                               f"{NO_NETWORK_HINT}") from e

    def _hook(self, pool_name: str):
        def keep(module, inputs, output):
            store = _CAPTURE.get()
            if store is None:
                return
            if "probe" in store:
                store["probe"][pool_name] = (inputs[0].shape, output.shape)
                return
            r_in, r_out = self._pool_reductions.get(pool_name, (None, None))
            if r_in is None:  # a stride-1 pool: no resolution to unpool into
                return
            if "switches" in store:
                with torch.no_grad():
                    store["switches"][r_in] = pool_indices(module, inputs[0])
            if "pooled" in store:
                store["pooled"][r_out] = output
        return keep

    @torch.no_grad()
    def _probe_pools(self, in_chans: int, size: int = 64) -> None:
        """Run one input to learn at which reductions each stride-2 max-pool
        reads and writes (fixed for an encoder: forward needs no size arithmetic,
        which would pin sizes under torch.export)."""
        was_training = self.training
        self.eval()
        token = _CAPTURE.set({"probe": {}})
        try:
            self.body(torch.zeros(1, in_chans, size, size))
            probe = _CAPTURE.get()["probe"]
        finally:
            _CAPTURE.reset(token)
            self.train(was_training)
        for pool_name, (in_shape, out_shape) in probe.items():  # call order: a later pool wins
            r_in, r_out = size // in_shape[-1], size // out_shape[-1]
            if r_out == 2 * r_in:
                self._pool_reductions[pool_name] = (r_in, r_out)
                self._pool_channels[pool_name] = in_shape[1]

    @staticmethod
    def _load_pretrained_fc(name, weights, in_chans) -> dict[str, Tensor] | None:
        """fc6/fc7 of a VGG's classifier MLP from the same weights, or None."""
        if weights is None or not name.startswith("vgg"):
            return None
        full = _timm().create_model(name, in_chans=in_chans, **_pretrained_kwargs(name, weights))
        mlp = getattr(full, "pre_logits", None)
        if mlp is None or not hasattr(mlp, "fc1"):
            return None
        return {"fc6.weight": mlp.fc1.weight.detach().clone(), "fc6.bias": mlp.fc1.bias.detach().clone(),
                "fc7.weight": mlp.fc2.weight.detach().clone(), "fc7.bias": mlp.fc2.bias.detach().clone()}

    @property
    def info(self) -> FeatureInfo:
        switch_channels, switch_sources, pool_channels, pool_sources = {}, {}, {}, {}
        for pool_name, (r_in, r_out) in self._pool_reductions.items():
            switch_channels[r_in] = pool_channels[r_out] = self._pool_channels[pool_name]
            switch_sources[r_in] = pool_sources[r_out] = pool_name
        return FeatureInfo(tuple(self.channels), tuple(self.reductions), self.in_chans,
                           switch_channels, switch_sources, pool_channels, pool_sources, self.name)

    @property
    def switch_channels(self) -> dict[int, int]:
        return self.info.switch_channels

    def _body_input(self, x: Tensor) -> Tensor:
        """Windowed transformers: zero-padded bottom/right to whole patches (features then
        have the ceil-divided sizes every head expects). Plain ViTs fit their own input."""
        p = self._pad_to
        if p is None:
            return x
        h, w = x.shape[-2:]
        return F.pad(x, (0, (w + p - 1) // p * p - w, 0, (h + p - 1) // p * p - h))

    def forward(self, x: Tensor) -> EncoderOutput:
        image, x = x, self._body_input(x)
        if not (self.capture_switches or self.capture_pools):
            return EncoderOutput(self.body(x), self.reductions, image)
        store = {}
        if self.capture_switches:
            store["switches"] = {}
        if self.capture_pools:
            store["pooled"] = {}
        token = _CAPTURE.set(store)
        try:
            features = self.body(x)
        finally:
            _CAPTURE.reset(token)
        return EncoderOutput(features, self.reductions, image, store.get("switches", {}),
                             store.get("pooled", {}))
