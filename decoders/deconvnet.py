"""DeconvNet decoder (Noh, Hong, Han, ICCV 2015).

The encoder's last feature passes the fully-convolutional fc6/fc7 bottleneck
(7x7 then 1x1 convolutions, 'same' padded so any input size works, then a 7x7
deconvolution back to the feature's width). The decoder mirrors the encoder:
at every level an unpooling step with the encoder's own max-pool switches,
then 3x3 deconvolutions with BN/ReLU. With another `upsample`, that method
replaces the unpooling step; the upsampler's 3x3 convolution stands for the
first deconvolution of each level.
"""
from __future__ import annotations

from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput
from decoders.upsample import make_upsampler


class DeconvNetHead(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int], num_classes: int,
                 upsample: str = "unpool", fc_channels: int = 4096,
                 decoder_channels: tuple[int, ...] | None = None,
                 depths: tuple[int, ...] = (3, 3, 3, 2, 2),
                 switch_channels: dict[int, int] | None = None):
        super().__init__()
        switch_channels = switch_channels or {}
        c = channels[-1]
        self.bottleneck = nn.Sequential(
            ConvNormAct(c, fc_channels, 7),                    # fc6
            ConvNormAct(fc_channels, fc_channels, 1),          # fc7
            ConvNormAct(fc_channels, c, 7, transposed=True),   # deconv-fc6
        )
        # Each distinct shallower resolution is one decoder level, mirroring the encoder.
        targets = sorted({r for r in reductions if r < reductions[-1]} | {1}, reverse=True)
        if decoder_channels is None:  # mirror: the encoder's width at each level
            decoder_channels = tuple(self._width(channels, reductions, r) for r in targets)
        if len(decoder_channels) < len(targets):
            raise ValueError(f"decoder_channels has {len(decoder_channels)} entries; this encoder "
                             f"(reductions {reductions}) needs {len(targets)}")
        self.targets = targets
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        prev_r = reductions[-1]
        for k, (r, out_c) in enumerate(zip(targets, decoder_channels)):
            depth = depths[min(k, len(depths) - 1)]
            self.ups.append(make_upsampler(upsample, c, out_c, prev_r // r,
                                           switch_channels=switch_channels.get(r)))
            layers = [nn.BatchNorm2d(out_c), nn.ReLU(inplace=True)]
            layers += [ConvNormAct(out_c, out_c, 3, transposed=True) for _ in range(depth - 1)]
            self.blocks.append(nn.Sequential(*layers))
            c, prev_r = out_c, r
        self.classifier = nn.Conv2d(c, num_classes, 1)

    @staticmethod
    def _width(channels, reductions, r):
        if r in reductions:
            return channels[reductions.index(r)]
        return max(channels[0] // 2, 16)  # below the shallowest feature

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = self.bottleneck(enc.features[-1])
        for r, up, block in zip(self.targets, self.ups, self.blocks):
            x = block(up(x, guide=enc.guide(r), indices=enc.switches.get(r), output_size=enc.size(r)))
        return self.classifier(x)
