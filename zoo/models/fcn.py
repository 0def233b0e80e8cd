"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer, Darrell, CVPR 2015)."""
from __future__ import annotations

from decoders.fcn import FCNHead
from zoo.models.base import SegmentationModel, build_encoder
from zoo.registry import register_model, register_preset


def _create_fcn(skips: int, encoder: str, num_classes: int, upsample: str, output_stride: int,
                encoder_weights, in_chans: int, head_channels: int, dropout: float):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans)
    head = FCNHead(enc.channels, enc.reductions, num_classes, upsample, skips=skips,
                   head_channels=head_channels, dropout=dropout,
                   switch_channels=enc.switch_channels)
    return SegmentationModel(enc, head)


@register_model
def fcn32s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str = "transposed",
           output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
           head_channels: int = 512, dropout: float = 0.1):
    return _create_fcn(0, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, head_channels, dropout)


@register_model
def fcn16s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str = "transposed",
           output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
           head_channels: int = 512, dropout: float = 0.1):
    return _create_fcn(1, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, head_channels, dropout)


@register_model
def fcn8s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str = "transposed",
          output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
          head_channels: int = 512, dropout: float = 0.1):
    return _create_fcn(2, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, head_channels, dropout)


register_preset("fcn8s_vgg16", fcn8s, encoder="vgg16_bn")
register_preset("fcn8s_resnet50", fcn8s, encoder="resnet50")
