"""FCN-32s/16s/8s head (Long, Shelhamer, Darrell, CVPR 2015).

Score the deepest feature, then for each skip level: upsample the running
score x2, add a 1x1 score of the skip feature (zero-initialised, as the paper
does, so training starts from the coarser net), and finally upsample to the
input size. Every upsampling step goes through the chosen upsampler;
`transposed` with bilinear initialisation is the paper's setting.
"""
from __future__ import annotations

from torch import Tensor, nn

from decoders.blocks import ConvNormAct, EncoderOutput
from decoders.upsample import make_upsampler


class FCNHead(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int], num_classes: int,
                 upsample: str = "transposed", skips: int = 0, head_channels: int = 512,
                 dropout: float = 0.1, switch_channels: dict[int, int] | None = None):
        super().__init__()
        switch_channels = switch_channels or {}
        deepest = reductions[-1]
        self.levels = []  # (feature index, reduction) of each skip, deep to shallow
        for k in range(1, skips + 1):
            r = deepest // 2 ** k
            if r not in reductions:
                raise ValueError(f"FCN with {skips} skip(s) needs a feature at reduction {r}; "
                                 f"the encoder gives reductions {reductions}")
            self.levels.append((len(reductions) - 1 - reductions[::-1].index(r), r))
        self.score = nn.Sequential(
            ConvNormAct(channels[-1], head_channels, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        self.skip_scores = nn.ModuleList()
        self.skip_ups = nn.ModuleList()
        prev = deepest
        for i, r in self.levels:
            score = nn.Conv2d(channels[i], num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.skip_scores.append(score)
            self.skip_ups.append(make_upsampler(upsample, num_classes, num_classes, prev // r,
                                                switch_channels=switch_channels.get(r)))
            prev = r
        self.final_up = make_upsampler(upsample, num_classes, num_classes, prev,
                                       switch_channels=switch_channels.get(1))
        self.final_reduction = prev

    def forward(self, enc: EncoderOutput) -> Tensor:
        x = self.score(enc.features[-1])
        for (i, r), score, up in zip(self.levels, self.skip_scores, self.skip_ups):
            skip = enc.features[i]
            x = up(x, guide=skip, indices=enc.switches.get(r), output_size=skip.shape[-2:])
            x = x + score(skip)
        return self.final_up(x, guide=enc.image, indices=enc.switches.get(1),
                             output_size=enc.image.shape[-2:])
