"""Plain ViTs (timm's VisionTransformer: ViT, DeiT, DINOv2) as pyramid encoders.

A plain ViT keeps one token grid at its patch stride, where every head here
expects a pyramid. The simple feature pyramid of ViTDet (Li, Mao, Girshick &
He, "Exploring Plain Vision Transformer Backbones for Object Detection",
ECCV 2022) builds one from that grid: with the tokens at reduction R,

    R/4:  ConvTranspose 2x2 (dim -> dim/2), LayerNorm, GELU, ConvTranspose 2x2 (-> dim/4)
    R/2:  ConvTranspose 2x2 (dim -> dim/2)
    R:    the tokens (dim)
    2R:   2x2 max-pooling (ceil mode, as encoders downsample)

each from the last block, or each from a block of its own (``blocks``, one
index per level, shallow to deep, read with timm's ``forward_intermediates``).
Levels deeper than ``output_stride`` are left out (PSPNet's default of 8
keeps /4 and /8).

Any input size: R is the power of two nearest the patch size (16 for
patch 14 and 16). The input is zero-padded bottom/right to a multiple of R,
then, where the patch is not R (DINOv2's 14), resized (bilinear) so each R x R
cell becomes one patch; the token grid is then ceil(H/R) x ceil(W/R), aligned
with the image as a /R feature map is, and each level is cropped to the
ceil-divided size every head expects. timm's ``dynamic_img_size``
interpolates the position embedding to the grid.

The pyramid's max-pool is functional, not a module: it gives no switches, as
a ViT has no max-pool of its own to unpool with.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

# timm modules whose models are VisionTransformer (plain, one token grid).
PLAIN_VIT_MODULES = ("vision_transformer", "deit")


def is_plain_vit(name: str) -> bool:
    from timm.models import is_model_in_modules
    return is_model_in_modules(name, list(PLAIN_VIT_MODULES))


class MaxPool2x(nn.Module):
    """2x2 max-pooling, ceil mode; functional so encoders find no switches in it."""

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2, 2, ceil_mode=True)


def _level(dim: int, up: float) -> nn.Module:
    """ViTDet's module for one pyramid level, ``up`` times the token resolution."""
    from timm.layers import LayerNorm2d
    if up == 4:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2), nn.GELU(),
                             nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2))
    if up == 2:
        return nn.ConvTranspose2d(dim, dim // 2, 2, 2)
    return nn.Identity() if up == 1 else MaxPool2x()


class SimpleFeaturePyramid(nn.Module):
    """A timm VisionTransformer and the ViTDet pyramid over its tokens;
    ``forward(x)`` returns the levels shallow to deep, like timm's ``features_only``."""

    def __init__(self, vit: nn.Module, name: str, *, output_stride: int = 32, blocks=None):
        super().__init__()
        self.vit, self.name = vit, name
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.token_reduction = r = 2 ** round(math.log2(self.patch_size))
        levels = [(up, red) for up, red in ((4, r // 4), (2, r // 2), (1, r), (0.5, 2 * r))
                  if 1 <= red <= output_stride]
        depth = len(vit.blocks)
        self.blocks = self._check_blocks(blocks, depth, len(levels))
        dim = vit.embed_dim
        self.levels = nn.ModuleList(_level(dim, up) for up, _ in levels)
        self.reductions = [red for _, red in levels]
        self.channels = [{4: dim // 4, 2: dim // 2}.get(up, dim) for up, _ in levels]

    def _check_blocks(self, blocks, depth: int, n: int) -> list[int]:
        if blocks is None:
            return [depth - 1] * n
        blocks = [int(b) for b in blocks]
        if len(blocks) != n or not all(-depth <= b < depth for b in blocks):
            raise ValueError(f"encoder {self.name!r}: vit_blocks {blocks} must give {n} block indices "
                             f"(one per pyramid level, shallow to deep), each in [0, {depth})")
        return [b % depth for b in blocks]

    def _fit_input(self, x: Tensor) -> Tensor:
        """Padded to whole R x R cells (so token (i, j) covers rows 16i.. as a /16 map
        would), then each cell resized to one patch where the patch is not R."""
        r, p = self.token_reduction, self.patch_size
        h, w = x.shape[-2:]
        gh, gw = (h + r - 1) // r, (w + r - 1) // r
        x = F.pad(x, (0, gw * r - w, 0, gh * r - h))
        if p == r:
            return x
        return F.interpolate(x, size=(gh * p, gw * p), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        wanted = sorted(set(self.blocks))
        tokens = self.vit.forward_intermediates(self._fit_input(x), indices=wanted, output_fmt="NCHW",
                                                intermediates_only=True)
        by_block = dict(zip(wanted, tokens))
        # Levels cover the padded cells: crop each to the ceil-divided size of the input.
        return [level(by_block[b])[..., :(h + r - 1) // r, :(w + r - 1) // r]
                for level, b, r in zip(self.levels, self.blocks, self.reductions)]


def create_vit_pyramid(name: str, *, in_chans: int, output_stride: int, pretrained_kwargs: dict,
                       blocks=None) -> SimpleFeaturePyramid:
    import timm
    vit = timm.create_model(name, in_chans=in_chans, num_classes=0, dynamic_img_size=True,
                            **pretrained_kwargs)
    return SimpleFeaturePyramid(vit, name, output_stride=output_stride, blocks=blocks)
