"""Class names and colour palettes of the datasets in the zoo.

- PASCAL VOC 2012 (Everingham et al., IJCV 2010): 21 classes, the devkit's
  bit-interleaved colour map (also what VOC palette PNGs carry).
- Cityscapes (Cordts et al., CVPR 2016): the 19 evaluation classes (train ids)
  and the official label colours; `CITYSCAPES_ID_TO_TRAINID` is the
  `labels.py` table of cityscapesScripts (every other id -> 255).
- CamVid in the 11-class SegNet version (Brostow et al., 2009; Badrinarayanan
  et al., TPAMI 2017): SegNet colours; raw value 11 is void.
- The procedural `synthetic` scenes of `zoo.data.synthetic`.

Palettes are `(num_classes, 3)` uint8 RGB arrays; `colorize` paints a label map.
"""
from __future__ import annotations

import numpy as np

from .base import IGNORE_INDEX


def make_palette(n: int) -> np.ndarray:
    """The VOC devkit colour map (`labelcolormap.m`) for `n` classes."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX,
             ignore_color=(255, 255, 255)) -> np.ndarray:
    """Paint a (H, W) label map as (H, W, 3) uint8 RGB; ignored or unknown labels get `ignore_color`."""
    mask = np.asarray(mask)
    lut = np.tile(np.asarray(ignore_color, np.uint8), (max(256, len(palette), ignore_index + 1), 1))
    lut[: len(palette)] = palette
    lut[ignore_index] = ignore_color  # also when the ignored value is a class id (e.g. 0)
    return lut[np.clip(mask, 0, len(lut) - 1)]


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
VOC_PALETTE = make_palette(21)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
], np.uint8)
# labelIds 7..33 that are evaluated; ids 0-6, 9, 10, 14-16, 18, 29, 30 (and -1) are ignored.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_NUM_IDS = 34  # labelIds 0..33 exist in gtFine

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
    "pedestrian", "bicyclist",
)
CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
], np.uint8)
CAMVID_VOID = 11

SYNTHETIC_CLASSES = ("sky", "ground", "building", "ball", "pole", "vehicle")
SYNTHETIC_PALETTE = np.array([
    (70, 130, 180), (152, 118, 84), (128, 64, 64), (60, 180, 75), (250, 200, 0), (0, 0, 142),
], np.uint8)
