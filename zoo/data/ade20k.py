"""ADE20K in the 150-class version of the MIT SceneParsing benchmark (Zhou et
al., "Scene Parsing through ADE20K Dataset", CVPR 2017): the
`ADEChallengeData2016` release, 20210 training and 2000 validation images.

Layout under `root` (the `ADEChallengeData2016` folder, or the folder holding it):

    images/training/<name>.jpg          ADE_train_00000001.jpg, ...
    images/validation/<name>.jpg        ADE_val_00000001.jpg, ...
    annotations/training/<name>.png     8-bit grey (mode L) label maps, same stem as the image
    annotations/validation/<name>.png

Label values: 0 = "other objects" (not among the 150 classes) -> 255 (ignore);
1..150 -> train ids 0..149, in the order of the benchmark's `objectInfo150`
(`ADE20K_CLASSES`). Any other value is refused, naming the file. This is the
`reduce_zero_label` convention of mmsegmentation's ADE20KDataset, whose
palette `ADE20K_PALETTE` is.

Splits: "train" (or "training") and "val" (or "validation"). Every image of
the split's folder is paired with the annotation of the same stem; a missing
annotation is named when the dataset is built. The unannotated test release
(`release_test`) is not read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, SegDataset, make_lut, read_label, remap_labels, require_all_exist, require_dir

LAYOUT = ("ADEChallengeData2016/{images/{training,validation}/<name>.jpg, "
          "annotations/{training,validation}/<name>.png} (label PNGs: 0 = other, 1..150 = classes)")
FOLDER = "ADEChallengeData2016"
SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}

# objectInfo150 order (first name of each entry), train ids 0..149 = label values 1..150.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# The colours of mmsegmentation's ADE20KDataset (two classes share one: road and skyscraper).
ADE20K_PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
], np.uint8)

_LUT = make_lut({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 151)}})


def find_ade_root(root) -> Path:
    """`root` itself when it holds `images/`, else `root/ADEChallengeData2016`;
    neither: the error names the folder looked for and the layout."""
    root = Path(root)
    for candidate in (root, root / FOLDER):
        if (candidate / "images").is_dir():
            return candidate
    require_dir(root, LAYOUT)
    base = root / FOLDER if (root / FOLDER).is_dir() else root
    return require_dir(base / "images", LAYOUT)  # raises, naming the folder


class ADE20K(SegDataset):
    classes = ADE20K_CLASSES
    palette = ADE20K_PALETTE

    def __init__(self, root, split: str = "train", transform=None):
        if split not in SPLITS:
            raise ValueError(f"ADE20K has no split {split!r}; accepted: {', '.join(SPLITS)}")
        super().__init__(root, split, transform)
        self.root = find_ade_root(self.root)
        folder = SPLITS[split]
        image_dir = require_dir(self.root / "images" / folder, LAYOUT)
        label_dir = require_dir(self.root / "annotations" / folder, LAYOUT)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
        if not images:
            raise FileNotFoundError(f"no .jpg images in {image_dir} (expected layout: {LAYOUT})")
        self.samples = [(image, label_dir / f"{image.stem}.png") for image in images]
        require_all_exist([s[1] for s in self.samples], "annotation", LAYOUT)

    def read_mask(self, path):
        return remap_labels(read_label(path), _LUT, path, "ADE20K labels 0 (other) or 1..150")
