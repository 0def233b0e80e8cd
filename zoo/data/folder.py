"""A plain folder of image / mask pairs, for data in no official format.

Layout under `root` (the first that exists):

    {split}/images/<name>.{jpg,jpeg,png,bmp,tif,webp}  +  {split}/masks/<name>.png
    images/<name>.*  +  masks/<name>.png   (all pairs; only the names listed one
                                            a line in {split}.txt when that file exists)

A split with neither its folder nor its list is every pair, the same frames as any other
split; the dataset warns, since a validation on them says nothing about new frames.

Masks hold class indices 0..K-1 and 255 = ignore (8/16-bit grey or palette
PNGs). Colour-coded RGB masks are decoded when `palette` is given: each pixel
colour must be one of the palette's, whose row number is the class.

Options: `classes` (names) or `num_classes` (names become "class_0", ...),
`palette` (K RGB triples; default: the VOC colour map).
"""
from __future__ import annotations

import warnings

import numpy as np

from .base import (
    IGNORE_INDEX,
    IMAGE_SUFFIXES,
    DataError,
    SegDataset,
    make_lut,
    read_label,
    remap_labels,
    require_all_exist,
    require_dir,
    require_file,
)
from .palettes import make_palette


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


LAYOUT = "root/{split}/images/*.jpg|png + root/{split}/masks/<same name>.png, or root/images + root/masks"


class FolderDataset(SegDataset):
    def __init__(self, root, split: str = "train", transform=None, *, classes=None, num_classes: int | None = None,
                 palette=None):
        super().__init__(root, split, transform)
        if classes is None and num_classes is None:
            raise ValueError("folder dataset needs `classes` (list of names) or `num_classes`")
        if classes is not None and num_classes is not None and len(classes) != num_classes:
            raise ValueError(f"folder dataset: {len(classes)} classes named but num_classes={num_classes}")
        self.classes = tuple(classes) if classes is not None else tuple(f"class_{k}" for k in range(num_classes))
        if not 1 <= len(self.classes) <= 255:
            raise ValueError(f"folder dataset: {len(self.classes)} classes; 1..255 are supported (255 = ignore)")
        self.palette = make_palette(len(self.classes)) if palette is None else np.asarray(palette, np.uint8)
        if self.palette.shape != (len(self.classes), 3):
            raise ValueError(f"palette has shape {self.palette.shape}; expected ({len(self.classes)}, 3)")
        self.colour_masks = palette is not None

        require_dir(self.root, LAYOUT)
        base = self.root / split if (self.root / split / "images").is_dir() else self.root
        image_dir, mask_dir = require_dir(base / "images", LAYOUT), require_dir(base / "masks", LAYOUT)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if base == self.root and not (self.root / f"{split}.txt").exists():
            warnings.warn(f"{self.root}: no {split}/ folder nor {split}.txt, so split {split!r} is every pair in "
                          "images/ and masks/, the same frames as any other split: a validation on them "
                          "measures fitting, not accuracy on new frames", stacklevel=2)
        if base == self.root and (self.root / f"{split}.txt").exists():
            wanted = require_file(self.root / f"{split}.txt", LAYOUT).read_text().split()
            by_stem = {p.stem: p for p in images}
            missing = [w for w in wanted if w not in by_stem]
            if missing:
                raise FileNotFoundError(f"{self.root / f'{split}.txt'} names images not in {image_dir}: "
                                        f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
            images = [by_stem[w] for w in wanted]
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir} "
                                    f"(expected layout: {LAYOUT})")
        self.samples = [(p, mask_dir / f"{p.stem}.png") for p in images]
        require_all_exist([s[1] for s in self.samples], "mask", LAYOUT)

    def read_mask(self, path):
        label = read_label(path)
        if self.colour_masks and label.ndim == 3:
            return self._decode_colours(label[..., :3], path)
        k = len(self.classes)
        lut = make_lut({**{i: i for i in range(k)}, 255: IGNORE_INDEX})
        return remap_labels(label, lut, path, f"0..{k - 1} or 255")

    def _decode_colours(self, rgb: np.ndarray, path) -> np.ndarray:
        codes, pal = _rgb_code(rgb), _rgb_code(self.palette)
        order = np.argsort(pal)
        pos = np.searchsorted(pal[order], codes).clip(0, len(pal) - 1)
        ok = pal[order][pos] == codes
        if not ok.all():
            bad = [f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in np.unique(codes[~ok])[:8]]
            raise DataError(f"colour mask {path} has colour(s) not in the palette: {', '.join(bad)}")
        return order[pos].astype(np.uint8)
