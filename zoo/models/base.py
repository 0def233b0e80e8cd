"""The model every architecture builds: encoder -> decoder head (-> aux head).

The head returns logits at the input's size through its own upsamplers, so
no final resize hides an off-by-one; `forward` checks the size instead.
`model.upsampling()` says, per decoder step, which method runs and what it
reads (which encoder max-pool's switches, which guide).

`logit_bias` (one value per class, `zoo.create(..., logit_bias=[...])`) is added
to the logits: `segzoo calibrate` sets it to undo the prior that class-weighted
training builds in. It lives in the model's config, not its state dict, so
weights trained without it load either way.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders.upsample import Upsampler, upsampler_class
from zoo.models.encoders import Encoder


class SegmentationModel(nn.Module):
    def __init__(self, encoder: Encoder, head: nn.Module, aux_head: nn.Module | None = None,
                 aux_index: int = -2):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.config: dict = {}
        self.register_buffer("logit_bias", None, persistent=False)

    def set_logit_bias(self, bias) -> None:
        """Add `bias` (K values, or None for none) to the logits from now on."""
        if bias is None:
            self.logit_bias = None
            return
        t = torch.as_tensor(bias, dtype=torch.float32)
        if t.ndim != 1 or not torch.isfinite(t).all():
            raise ValueError(f"logit_bias must be a list of finite numbers, one per class; got {bias!r}")
        ref = next(self.parameters(), None)
        self.logit_bias = t.to(ref.device) if ref is not None else t

    def forward(self, x: Tensor, aux: bool = False):
        enc = self.encoder(x)
        logits = self.head(enc)
        if logits.shape[-2:] != x.shape[-2:]:
            raise RuntimeError(f"head returned {tuple(logits.shape[-2:])} for input "
                               f"{tuple(x.shape[-2:])}")
        if self.logit_bias is not None:
            if self.logit_bias.numel() != logits.shape[1]:
                raise RuntimeError(f"logit_bias has {self.logit_bias.numel()} values for "
                                   f"{logits.shape[1]} classes")
            logits = logits + self.logit_bias.to(logits.dtype).view(1, -1, 1, 1)
        if not aux:
            return logits
        aux_logits = None
        if self.aux_head is not None:
            aux_logits = self.aux_head(enc.features[self.aux_index], x.shape[-2:])
        return logits, aux_logits

    def upsampling(self) -> list[dict]:
        """One row per decoder upsampling step: module, method, reductions, what it reads."""
        info = self.encoder.info
        rows = []
        for name, m in self.head.named_modules():
            if isinstance(m, Upsampler) and m.reductions and m.scale > 1:
                rows.append({"module": f"head.{name}", "method": m.method,
                             "from": m.reductions[0], "to": m.reductions[1],
                             "reads": m.describe(info)})
        return rows


def build_encoder(encoder: str, *, upsample, output_stride: int, encoder_weights,
                  in_chans: int, capture_pools: bool = False, vit_blocks=None) -> Encoder:
    """The encoder wrapper, capturing max-pool switches only when the upsampler
    declares that it needs them. `vit_blocks`: for a plain ViT, the block each
    pyramid level is read from (default: the last block for all)."""
    needs_switches = upsampler_class(upsample).needs_switches
    return Encoder(encoder, in_chans=in_chans, output_stride=output_stride,
                   weights=encoder_weights, capture_switches=needs_switches,
                   capture_pools=capture_pools, vit_blocks=vit_blocks)


def load_pretrained_fc(targets: dict, encoder: Encoder, where: str) -> bool:
    """Copy a VGG's ImageNet fc6/fc7 (`encoder.pretrained_fc`, keys fc6.weight,
    fc6.bias, fc7.weight, fc7.bias) into a head's parameters (`targets`: the same
    keys to tensors, biases optional) where every weight's shape fits, as the
    papers start from them. Returns whether it did; warns when they do not fit."""
    state = encoder.pretrained_fc
    if not state:
        return False
    if any(targets[k].shape != state[k].shape for k in ("fc6.weight", "fc7.weight")):
        import warnings
        warnings.warn(f"{where}: the encoder's ImageNet fc6/fc7 {tuple(state['fc6.weight'].shape)} "
                      "do not fit this head's (fc_channels differs): they start from random weights",
                      stacklevel=3)
        return False
    with torch.no_grad():
        for key, tensor in targets.items():
            tensor.copy_(state[key])
    return True
