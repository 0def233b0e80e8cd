"""U-Net decoder (Ronneberger, Fischer, Brox, MICCAI 2015) on any timm encoder.

From the deepest feature up: upsample to the next shallower level, concatenate
that level's feature, two conv-norm-act blocks. Below the shallowest feature a
last stage (no skip) reaches the input resolution, as timm/smp-style encoders
start at stride 2 or 4. Where a dilated encoder keeps several levels at one
resolution, the step is a plain concatenation.

The classifier is a 3x3 convolution (`classifier_kernel`), not the paper's
1x1: the last stage here has 16 channels at full resolution (the paper's
has 64), and on CamVid from scratch a 3x3 classifier cut the training loss
after 60 iterations from 1.46 to 0.79 (smp's U-Net, which has one: 0.66;
`python tools/benchmark.py --learning`, see docs/parity/README.md).
It starts from Xavier (Glorot) uniform weights and zero bias, as smp's
segmentation head does, not PyTorch's default: the training loss over
iterations 51-100 of the same benchmark fell from 0.725 to 0.682 (smp: 0.668).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput, FeatureInfo
from decoders.upsample import make_step


class UNetStage(nn.Module):
    def __init__(self, up: nn.Module, skip_channels: int, out_channels: int, norm_layer, act_layer):
        super().__init__()
        self.up = up
        conv = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.convs = nn.Sequential(ConvNormAct(up.out_channels + skip_channels, out_channels, **conv),
                                   ConvNormAct(out_channels, out_channels, **conv))

    def forward(self, x, skip, step: dict):
        x = self.up(x, **step)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetHead(nn.Module):
    def __init__(self, info: FeatureInfo, num_classes: int, upsample="bilinear",
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 norm_layer="batchnorm", act_layer="relu", classifier_kernel: int = 3):
        super().__init__()
        reductions, channels = list(info.reductions), list(info.channels)
        # (target reduction, skip feature index or None) for each stage, deep to shallow
        self.plan = [(reductions[i], i) for i in range(len(reductions) - 2, -1, -1)]
        if reductions[0] > 1:
            self.plan.append((1, None))
        if len(decoder_channels) < len(self.plan):
            raise ValueError(f"decoder_channels has {len(decoder_channels)} entries; encoder "
                             f"{info.name!r} (reductions {reductions}) needs {len(self.plan)}")
        self.stages = nn.ModuleList()
        prev_c, prev_r = channels[-1], reductions[-1]
        for (r, i), out_c in zip(self.plan, decoder_channels):
            skip_c = channels[i] if i is not None else 0
            up = make_step(upsample, prev_c, out_c, prev_r, r, info, head_convolves=True)
            self.stages.append(UNetStage(up, skip_c, out_c, norm_layer, act_layer))
            prev_c, prev_r = out_c, r
        self.classifier = nn.Conv2d(prev_c, num_classes, classifier_kernel,
                                    padding=classifier_kernel // 2)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, enc: EncoderOutput) -> Tensor:
        x, prev = enc.features[-1], enc.reductions[-1]
        for (r, i), stage in zip(self.plan, self.stages):
            x = stage(x, enc.features[i] if i is not None else None, enc.step(prev, r))
            prev = r
        return self.classifier(x)
