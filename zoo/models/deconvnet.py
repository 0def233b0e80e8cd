"""DeconvNet (Noh, Hong, Han, ICCV 2015): VGG16 + max-unpooling + deconvolution."""
from __future__ import annotations

from decoders.deconvnet import DeconvNetHead
from zoo.models.base import SegmentationModel, build_encoder
from zoo.registry import register_model, register_preset


@register_model
def deconvnet(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str = "unpool",
              output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
              fc_channels: int = 4096, decoder_channels: tuple[int, ...] | None = None,
              depths: tuple[int, ...] = (3, 3, 3, 2, 2)):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans)
    head = DeconvNetHead(enc.channels, enc.reductions, num_classes, upsample,
                         fc_channels=fc_channels,
                         decoder_channels=tuple(decoder_channels) if decoder_channels else None,
                         depths=tuple(depths), switch_channels=enc.switch_channels)
    return SegmentationModel(enc, head)


register_preset("deconvnet_vgg16", deconvnet, encoder="vgg16_bn")
