"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer, Darrell, CVPR 2015)."""
from __future__ import annotations

from decoders.fcn import FCNHead
from zoo.models.base import SegmentationModel, build_encoder, load_pretrained_fc
from zoo.models.registry import register_model, register_preset


def _create_fcn(name: str, skips: int, encoder: str, num_classes: int, upsample, output_stride: int,
                encoder_weights, in_chans: int, fc_channels: int, dropout: float, act_layer,
                vit_blocks):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans, capture_pools=skips > 0,
                        vit_blocks=vit_blocks)
    head = FCNHead(enc.info, num_classes, upsample, skips=skips, fc_channels=fc_channels,
                   dropout=dropout, act_layer=act_layer)
    fc = head.fc
    load_pretrained_fc({"fc6.weight": fc.fc6.weight, "fc6.bias": fc.fc6.bias,
                        "fc7.weight": fc.fc7.weight, "fc7.bias": fc.fc7.bias}, enc, name)
    return SegmentationModel(enc, head)


@register_model(tiny={"fc_channels": 16})  # small widths for tests and the export grid
def fcn32s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str | dict | type = "transposed",
           output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
           fc_channels: int = 4096, dropout: float = 0.5, act_layer: str | None = "relu",
           vit_blocks: tuple[int, ...] | None = None):
    return _create_fcn("fcn32s", 0, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, fc_channels, dropout, act_layer, vit_blocks)


@register_model(tiny={"fc_channels": 16})  # small widths for tests and the export grid
def fcn16s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str | dict | type = "transposed",
           output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
           fc_channels: int = 4096, dropout: float = 0.5, act_layer: str | None = "relu",
           vit_blocks: tuple[int, ...] | None = None):
    return _create_fcn("fcn16s", 1, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, fc_channels, dropout, act_layer, vit_blocks)


@register_model(tiny={"fc_channels": 16})  # small widths for tests and the export grid
def fcn8s(encoder: str = "vgg16_bn", num_classes: int = 21, upsample: str | dict | type = "transposed",
          output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
          fc_channels: int = 4096, dropout: float = 0.5, act_layer: str | None = "relu",
          vit_blocks: tuple[int, ...] | None = None):
    return _create_fcn("fcn8s", 2, encoder, num_classes, upsample, output_stride, encoder_weights,
                       in_chans, fc_channels, dropout, act_layer, vit_blocks)


register_preset("fcn8s_vgg16", fcn8s, encoder="vgg16_bn")
register_preset("fcn8s_resnet50", fcn8s, encoder="resnet50", fc_channels=2048)
