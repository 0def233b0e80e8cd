"""PSPNet head (Zhao, Shi, Qi, Wang, Jia, CVPR 2017).

Pyramid pooling on the last feature of a dilated encoder: average-pool to
bins (1, 2, 3, 6), reduce each to C/len(bins) channels, resize back
(bilinear, as the paper) and concatenate with the feature; a 3x3
conv-norm-act, dropout, a 1x1 classifier, and the final upsampling to the
input size through the chosen upsampler. The auxiliary FCN head on the stage
before the last supervises training with weight 0.4 in the paper.

The 1x1 bin has no normalisation: one value per channel and image gives
BatchNorm nothing to normalise at one image per process, the usual per-GPU
batch for large crops (its convolution has a bias instead).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput, FeatureInfo
from decoders.upsample import make_step


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, bins=(1, 2, 3, 6), norm_layer="batchnorm", act_layer="relu"):
        super().__init__()
        out_c = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b),
                          ConvNormAct(in_channels, out_c, 1, norm_layer=None if b == 1 else norm_layer,
                                      act_layer=act_layer))
            for b in bins)
        self.out_channels = in_channels + out_c * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
                  for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Module):
    def __init__(self, info: FeatureInfo, num_classes: int, upsample="bilinear",
                 bins: tuple[int, ...] = (1, 2, 3, 6), head_channels: int = 512, dropout: float = 0.1,
                 norm_layer="batchnorm", act_layer="relu"):
        super().__init__()
        self.ppm = PyramidPooling(info.channels[-1], bins, norm_layer, act_layer)
        self.fuse = nn.Sequential(ConvNormAct(self.ppm.out_channels, head_channels, 3,
                                              norm_layer=norm_layer, act_layer=act_layer),
                                  nn.Dropout2d(dropout),
                                  nn.Conv2d(head_channels, num_classes, 1))
        self.up = make_step(upsample, num_classes, num_classes, info.reductions[-1], 1, info)

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = self.fuse(self.ppm(enc.features[-1]))
        return self.up(x, **enc.step(enc.reductions[-1], 1))


class AuxHead(nn.Module):
    """The auxiliary FCN head: conv-norm-act, dropout, classifier, bilinear
    resize to the input (it only supervises training)."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 256,
                 dropout: float = 0.1, norm_layer="batchnorm", act_layer="relu"):
        super().__init__()
        self.layers = nn.Sequential(ConvNormAct(in_channels, mid_channels, 3, norm_layer=norm_layer,
                                                act_layer=act_layer),
                                    nn.Dropout2d(dropout), nn.Conv2d(mid_channels, num_classes, 1))

    def forward(self, x: Tensor, size) -> Tensor:
        return F.interpolate(self.layers(x), size=size, mode="bilinear", align_corners=False)
