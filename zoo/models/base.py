"""The model every architecture builds: encoder -> decoder head (-> aux head).

The head returns logits at the input's size through its own upsamplers, so
no final resize hides an off-by-one; `forward` checks the size instead.
"""
from __future__ import annotations

from torch import Tensor, nn

from decoders.blocks import EncoderOutput
from zoo.encoders import Encoder


class SegmentationModel(nn.Module):
    def __init__(self, encoder: Encoder, head: nn.Module, aux_head: nn.Module | None = None,
                 aux_index: int = -2):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.config: dict = {}

    def forward(self, x: Tensor, aux: bool = False):
        features, switches = self.encoder(x)
        logits = self.head(EncoderOutput(features, self.encoder.reductions, x, switches))
        if logits.shape[-2:] != x.shape[-2:]:
            raise RuntimeError(f"head returned {tuple(logits.shape[-2:])} for input "
                               f"{tuple(x.shape[-2:])}")
        if not aux:
            return logits
        aux_logits = None
        if self.aux_head is not None:
            aux_logits = self.aux_head(features[self.aux_index], x.shape[-2:])
        return logits, aux_logits


def build_encoder(encoder: str, *, upsample: str, output_stride: int, encoder_weights,
                  in_chans: int) -> Encoder:
    """The encoder wrapper, capturing max-pool switches only when unpooling."""
    from decoders.upsample import check_upsampler
    check_upsampler(upsample)
    return Encoder(encoder, in_chans=in_chans, output_stride=output_stride,
                   weights=encoder_weights, capture_switches=upsample == "unpool")
