"""DeconvNet (Noh, Hong, Han, ICCV 2015) and SegNet (Badrinarayanan, Kendall,
Cipolla, TPAMI 2017) decoders: one head, with and without the fc bottleneck.

DeconvNet: the encoder's last feature passes the fully-convolutional fc6/fc7
bottleneck (7x7 then 1x1 convolutions, 'same' padded so any input size
works, then a 7x7 deconvolution back to the decoder's first width). SegNet
has no bottleneck. The decoder then mirrors the encoder: every level is one
upsampling step, by default max-unpooling with the encoder's own switches,
then `depth` 3x3 deconvolutions with norm and activation, the last of which
changes the width to the next level's (the channels of the switches it will
unpool with), as in the papers.

The upsampler is the only thing that changes with `upsample`: it keeps the
channel count, and every level has the same `depth` convolutions after it
whatever the method, so an ablation compares upsamplers, not depths.
With an ImageNet VGG encoder, fc6/fc7 start from timm's pretrained
classifier MLP where `fc_channels` fits (their biases too where the
convolutions have one, i.e. without a norm layer after them).

The papers' stride-1 deconvolutions are computed as convolutions: at stride
1 a transposed convolution is a convolution with the kernel flipped, the
same family of functions with the same parameters, and convolutions are
the best-served kernels on every backend.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput, FeatureInfo
from decoders.upsample import make_step, project


def mirrored_widths(info: FeatureInfo, targets: list[int]) -> tuple[int, ...]:
    """Width of each decoder level: the channels of the switches it unpools
    with, else of the encoder's feature at that resolution, else (below the
    shallowest feature) half the shallowest width, at least 16."""
    widths = []
    for r in targets:
        if r in info.switch_channels:
            widths.append(info.switch_channels[r])
        elif r in info.reductions:
            widths.append(info.channels[info.reductions.index(r)])
        else:
            widths.append(max(info.channels[0] // 2, 16))
    return tuple(widths)


class DeconvNetHead(nn.Module):
    def __init__(self, info: FeatureInfo, num_classes: int, upsample="unpool",
                 fc_channels: int | None = 4096, decoder_channels: tuple[int, ...] | None = None,
                 depths: tuple[int, ...] = (3, 3, 3, 2, 2), norm_layer="batchnorm", act_layer="relu"):
        super().__init__()
        reductions = list(info.reductions)
        # Each distinct shallower resolution is one decoder level, mirroring the encoder.
        self.targets = sorted({r for r in reductions if r < reductions[-1]} | {1}, reverse=True)
        widths = tuple(decoder_channels) if decoder_channels else mirrored_widths(info, self.targets)
        if len(widths) < len(self.targets):
            raise ValueError(f"decoder_channels has {len(widths)} entries; encoder {info.name!r} "
                             f"(reductions {reductions}) needs {len(self.targets)}")
        conv = dict(norm_layer=norm_layer, act_layer=act_layer)
        c = info.channels[-1]
        if fc_channels:
            self.bottleneck = nn.Sequential(OrderedDict(
                fc6=ConvNormAct(c, fc_channels, 7, **conv),
                fc7=ConvNormAct(fc_channels, fc_channels, 1, **conv),
                deconv_fc6=ConvNormAct(fc_channels, widths[0], 7, **conv)))
        else:
            self.bottleneck = project(c, widths[0])
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        prev_r = reductions[-1]
        for k, r in enumerate(self.targets):
            w = widths[k]
            nxt = widths[k + 1] if k + 1 < len(self.targets) else w
            depth = depths[min(k, len(depths) - 1)]
            if depth < 1:
                raise ValueError(f"depths must be >= 1, got {tuple(depths)}")
            self.ups.append(make_step(upsample, w, w, prev_r, r, info, head_convolves=True))
            self.blocks.append(nn.Sequential(*[
                ConvNormAct(w, nxt if d == depth - 1 else w, 3, **conv)
                for d in range(depth)]))
            prev_r = r
        self.classifier = nn.Conv2d(widths[len(self.targets) - 1], num_classes, 1)

    def fc_parameters(self) -> dict:
        """fc6/fc7 convolution weights (and biases, where a convolution has one: no norm layer
        follows it) by the names of a VGG's pretrained MLP."""
        if not isinstance(self.bottleneck, nn.Sequential):
            return {}
        convs = {k: getattr(self.bottleneck, k)[0] for k in ("fc6", "fc7")}
        return {f"{k}.{p}": getattr(c, p) for k, c in convs.items() for p in ("weight", "bias")
                if getattr(c, p) is not None}

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = self.bottleneck(enc.features[-1])
        prev = enc.reductions[-1]
        for r, up, block in zip(self.targets, self.ups, self.blocks):
            x = block(up(x, **enc.step(prev, r)))
            prev = r
        return self.classifier(x)
