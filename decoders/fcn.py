"""FCN-32s/16s/8s head (Long, Shelhamer, Darrell, CVPR 2015).

The deepest feature (pool5 on VGG) passes the fully-convolutional classifier
of the paper: fc6, a 7x7 convolution to `fc_channels` (4096 in the paper),
and fc7, a 1x1 convolution, each with ReLU and dropout 0.5, then a 1x1
score. For each skip level the running score is upsampled x2 and a 1x1 score
of the skip is added (zero-initialised, as the paper does, so training starts
from the coarser net); a last step upsamples to the input size. Skips come
from the encoder's max-pool outputs at their resolution where it has them
(VGG: pool4 at /16 and pool3 at /8, as the paper), else from the encoder's
feature there (ResNet stages). `skip_sources` records which.

fc6 is 'same'-padded so any input size works (the paper pads the input by
100 px and crops instead). With a VGG encoder and ImageNet weights, fc6/fc7
load timm's pretrained classifier MLP where `fc_channels` matches, as the
paper initialises from VGG's fully connected layers. Every upsampling step
goes through the chosen upsampler; `transposed` with bilinear initialisation
is the paper's setting.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from decoders.blocks import EncoderOutput, FeatureInfo, act_factory
from decoders.upsample import make_step


def fc_layers(in_channels: int, fc_channels: int, dropout: float, act_layer="relu") -> nn.Sequential:
    """fc6 (7x7) and fc7 (1x1) as convolutions, each followed by the activation and dropout.

    Element dropout (`nn.Dropout`), as the paper's Caffe Dropout layers after fc6/fc7: they drop
    single activations, where `nn.Dropout2d` would drop whole channels of the map.
    """
    act = act_factory(act_layer) or nn.Identity
    return nn.Sequential(OrderedDict(
        fc6=nn.Conv2d(in_channels, fc_channels, 7, padding=3), act6=act(), drop6=nn.Dropout(dropout),
        fc7=nn.Conv2d(fc_channels, fc_channels, 1), act7=act(), drop7=nn.Dropout(dropout)))


class FCNHead(nn.Module):
    def __init__(self, info: FeatureInfo, num_classes: int, upsample="transposed", skips: int = 0,
                 fc_channels: int = 4096, dropout: float = 0.5, act_layer="relu"):
        super().__init__()
        reductions = list(info.reductions)
        deepest = reductions[-1]
        self.levels = []  # (reduction, feature index or None for a pool output), deep to shallow
        self.skip_sources: dict[int, str] = {}
        skip_channels = []
        for k in range(1, skips + 1):
            r = deepest // 2 ** k
            if r in info.pool_channels:
                self.levels.append((r, None))
                self.skip_sources[r] = f"max-pool {info.pool_sources[r]}"
                skip_channels.append(info.pool_channels[r])
            elif r in reductions:
                i = len(reductions) - 1 - reductions[::-1].index(r)
                self.levels.append((r, i))
                self.skip_sources[r] = f"feature {i}"
                skip_channels.append(info.channels[i])
            else:
                raise ValueError(f"FCN with {skips} skip(s) needs a feature at reduction {r}; "
                                 f"encoder {info.name!r} gives reductions {reductions}")
        self.fc = fc_layers(info.channels[-1], fc_channels, dropout, act_layer)
        # PyTorch's default init. Long et al. zero the class scoring layer too (section 4.3); it
        # is kept as the zoo's entries and ablations were trained, and the skips below are zeroed.
        self.score = nn.Conv2d(fc_channels, num_classes, 1)
        self.skip_scores, self.skip_ups = nn.ModuleList(), nn.ModuleList()
        prev = deepest
        for (r, _), c in zip(self.levels, skip_channels):
            score = nn.Conv2d(c, num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.skip_scores.append(score)
            self.skip_ups.append(make_step(upsample, num_classes, num_classes, prev, r, info))
            prev = r
        self.final_up = make_step(upsample, num_classes, num_classes, prev, 1, info)

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = self.score(self.fc(enc.features[-1]))
        prev = enc.reductions[-1]
        for (r, i), score, up in zip(self.levels, self.skip_scores, self.skip_ups):
            skip = enc.pooled[r] if i is None else enc.features[i]
            step = enc.step(prev, r)
            step["output_size"] = skip.shape[-2:]
            x = up(x, **step) + score(skip)
            prev = r
        return self.final_up(x, **enc.step(prev, 1))
