"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015) on any timm encoder."""
from __future__ import annotations

from decoders.unet import UNetHead
from zoo.models.base import SegmentationModel, build_encoder
from zoo.models.registry import register_model, register_preset


@register_model(tiny={"decoder_channels": (32, 24, 16, 8, 8)})  # small widths for tests and the export grid
def unet(encoder: str = "resnet34", num_classes: int = 21, upsample: str | dict | type = "bilinear",
         output_stride: int = 32, encoder_weights: str | None = None, in_chans: int = 3,
         decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
         norm_layer: str | None = "batchnorm", act_layer: str | None = "relu",
         classifier_kernel: int = 3, vit_blocks: tuple[int, ...] | None = None):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans, vit_blocks=vit_blocks)
    head = UNetHead(enc.info, num_classes, upsample, decoder_channels=tuple(decoder_channels),
                    norm_layer=norm_layer, act_layer=act_layer, classifier_kernel=classifier_kernel)
    return SegmentationModel(enc, head)


register_preset("unet_resnet18", unet, encoder="resnet18")
register_preset("unet_resnet34", unet, encoder="resnet34")
register_preset("unet_convnext_tiny", unet, encoder="convnext_tiny")
