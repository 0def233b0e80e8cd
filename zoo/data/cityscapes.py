"""Cityscapes (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016): 19 evaluation classes.

Layout under `root`:

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png   (optional)

Where a `*_labelTrainIds.png` exists (made by cityscapesScripts'
`createTrainIdLabelImgs`) it is read as is (0..18, 255); otherwise the
`*_labelIds.png` is mapped with the standard id -> trainId table of
cityscapesScripts (ids 0..33; every id that is not evaluated -> 255).

Options: `annotation` ("gtFine", or "gtCoarse" for the coarse labels, e.g.
split `train_extra`).
"""
from __future__ import annotations

from pathlib import Path

from .base import IGNORE_INDEX, SegDataset, make_lut, read_label, remap_labels, require_all_exist, require_dir
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_NUM_IDS, CITYSCAPES_PALETTE

_ID_LUT = make_lut({i: CITYSCAPES_ID_TO_TRAINID.get(i, IGNORE_INDEX) for i in range(CITYSCAPES_NUM_IDS)})
_TRAINID_LUT = make_lut({**{k: k for k in range(19)}, 255: IGNORE_INDEX})
_SUFFIX = "_leftImg8bit.png"


class Cityscapes(SegDataset):
    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root, split: str = "train", transform=None, *, annotation: str = "gtFine"):
        super().__init__(root, split, transform)
        layout = (f"leftImg8bit/{split}/<city>/*{_SUFFIX} and "
                  f"{annotation}/{split}/<city>/*_{annotation}_labelIds.png (or _labelTrainIds.png)")
        require_dir(self.root, layout)
        image_dir = require_dir(self.root / "leftImg8bit" / split, layout)
        label_dir = require_dir(self.root / annotation / split, layout)
        images = sorted(image_dir.glob(f"*/*{_SUFFIX}"))
        if not images:
            raise FileNotFoundError(f"no *{_SUFFIX} files under {image_dir} (expected layout: {layout})")
        self.samples = [(img, self._label_file(label_dir / img.parent.name, img, annotation)) for img in images]
        require_all_exist([s[1] for s in self.samples], "label", layout)

    @staticmethod
    def _label_file(city_dir: Path, image: Path, annotation: str) -> Path:
        stem = image.name[: -len(_SUFFIX)]
        train_ids = city_dir / f"{stem}_{annotation}_labelTrainIds.png"
        return train_ids if train_ids.is_file() else city_dir / f"{stem}_{annotation}_labelIds.png"

    def name_of(self, image_file):
        return Path(image_file).name[: -len(_SUFFIX)]

    def read_mask(self, path):
        if path.name.endswith("_labelTrainIds.png"):
            return remap_labels(read_label(path), _TRAINID_LUT, path, "train ids 0..18 or 255")
        return remap_labels(read_label(path), _ID_LUT, path, f"Cityscapes label ids 0..{CITYSCAPES_NUM_IDS - 1}")
