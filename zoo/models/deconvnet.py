"""DeconvNet (Noh, Hong, Han, ICCV 2015) and SegNet (Badrinarayanan, Kendall,
Cipolla, TPAMI 2017): VGG16 + max-unpooling with the encoder's own switches +
deconvolution; DeconvNet with its fc6/fc7 bottleneck, SegNet without."""
from __future__ import annotations

from decoders.deconvnet import DeconvNetHead
from zoo.models.base import SegmentationModel, build_encoder, load_pretrained_fc
from zoo.models.registry import register_model, register_preset


def _create(name, encoder, num_classes, upsample, output_stride, encoder_weights, in_chans,
            fc_channels, decoder_channels, depths, norm_layer, act_layer, vit_blocks):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans, vit_blocks=vit_blocks)
    head = DeconvNetHead(enc.info, num_classes, upsample, fc_channels=fc_channels,
                         decoder_channels=tuple(decoder_channels) if decoder_channels else None,
                         depths=tuple(depths), norm_layer=norm_layer, act_layer=act_layer)
    if fc_channels:
        load_pretrained_fc(head.fc_parameters(), enc, name)
    return SegmentationModel(enc, head)


@register_model(tiny={"fc_channels": 32})  # small widths for tests and the export grid
def deconvnet(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str | dict | type = "unpool",
              output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
              fc_channels: int = 4096, decoder_channels: tuple[int, ...] | None = None,
              depths: tuple[int, ...] = (3, 3, 3, 2, 2), norm_layer: str | None = "batchnorm",
              act_layer: str | None = "relu", vit_blocks: tuple[int, ...] | None = None):
    return _create("deconvnet", encoder, num_classes, upsample, output_stride, encoder_weights,
                   in_chans, fc_channels, decoder_channels, depths, norm_layer, act_layer, vit_blocks)


@register_model(tiny={})  # small widths for tests and the export grid
def segnet(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str | dict | type = "unpool",
           output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
           decoder_channels: tuple[int, ...] | None = None, depths: tuple[int, ...] = (3, 3, 3, 2, 2),
           norm_layer: str | None = "batchnorm", act_layer: str | None = "relu",
           vit_blocks: tuple[int, ...] | None = None):
    return _create("segnet", encoder, num_classes, upsample, output_stride, encoder_weights,
                   in_chans, None, decoder_channels, depths, norm_layer, act_layer, vit_blocks)


register_preset("deconvnet_vgg16", deconvnet, encoder="vgg16_bn")
register_preset("segnet_vgg16", segnet, encoder="vgg16_bn")
