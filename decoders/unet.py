"""U-Net decoder (Ronneberger, Fischer, Brox, MICCAI 2015).

From the deepest feature up: upsample to the next shallower level, concatenate
that level's feature, two conv-norm-act blocks. Below the shallowest feature a
last stage (no skip) reaches the input resolution, as timm/smp-style encoders
start at stride 2 or 4. Where a dilated encoder keeps several levels at one
resolution, the step is a plain concatenation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput
from decoders.upsample import make_upsampler


class UNetStage(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels, scale, upsample, switch_channels):
        super().__init__()
        self.up = make_upsampler(upsample, in_channels, out_channels, scale,
                                 switch_channels=switch_channels)
        self.convs = nn.Sequential(ConvNormAct(out_channels + skip_channels, out_channels),
                                   ConvNormAct(out_channels, out_channels))

    def forward(self, x, skip, guide, indices, size):
        x = self.up(x, guide=guide, indices=indices, output_size=size)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetHead(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int], num_classes: int,
                 upsample: str = "bilinear",
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 switch_channels: dict[int, int] | None = None):
        super().__init__()
        switch_channels = switch_channels or {}
        # (target reduction, skip feature index or None) for each stage, deep to shallow
        self.plan = [(reductions[i], i) for i in range(len(reductions) - 2, -1, -1)]
        if reductions[0] > 1:
            self.plan.append((1, None))
        if len(decoder_channels) < len(self.plan):
            raise ValueError(f"decoder_channels has {len(decoder_channels)} entries; this encoder "
                             f"(reductions {reductions}) needs {len(self.plan)}")
        self.stages = nn.ModuleList()
        prev_c, prev_r = channels[-1], reductions[-1]
        for (r, i), out_c in zip(self.plan, decoder_channels):
            skip_c = channels[i] if i is not None else 0
            self.stages.append(UNetStage(prev_c, skip_c, out_c, prev_r // r, upsample,
                                         switch_channels.get(r)))
            prev_c, prev_r = out_c, r
        self.classifier = nn.Conv2d(prev_c, num_classes, 1)

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = enc.features[-1]
        for (r, i), stage in zip(self.plan, self.stages):
            skip = enc.features[i] if i is not None else None
            x = stage(x, skip, enc.guide(r), enc.switches.get(r), enc.size(r))
        return self.classifier(x)
