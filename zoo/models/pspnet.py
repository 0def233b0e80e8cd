"""PSPNet (Zhao et al., CVPR 2017): pyramid pooling on a dilated encoder."""
from __future__ import annotations

from decoders.psp import AuxHead, PSPHead
from zoo.models.base import SegmentationModel, build_encoder
from zoo.models.registry import register_model, register_preset


@register_model(tiny={"head_channels": 16, "aux_channels": 8})  # small widths for tests and the export grid
def pspnet(encoder: str = "resnet50", num_classes: int = 21, upsample: str | dict | type = "bilinear",
           output_stride: int = 8, encoder_weights: str | None = None, in_chans: int = 3,
           bins: tuple[int, ...] = (1, 2, 3, 6), head_channels: int = 512, dropout: float = 0.1,
           aux_head: bool = True, aux_channels: int = 256, norm_layer: str | None = "batchnorm",
           act_layer: str | None = "relu", vit_blocks: tuple[int, ...] | None = None):
    enc = build_encoder(encoder, upsample=upsample, output_stride=output_stride,
                        encoder_weights=encoder_weights, in_chans=in_chans, vit_blocks=vit_blocks)
    head = PSPHead(enc.info, num_classes, upsample, bins=tuple(bins), head_channels=head_channels,
                   dropout=dropout, norm_layer=norm_layer, act_layer=act_layer)
    aux = AuxHead(enc.channels[-2], num_classes, aux_channels, dropout, norm_layer,
                  act_layer) if aux_head else None
    return SegmentationModel(enc, head, aux)


register_preset("pspnet_resnet18", pspnet, encoder="resnet18")
register_preset("pspnet_resnet50", pspnet, encoder="resnet50")
