"""COCO-format segmentation (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014; COCO-Stuff, Caesar et al., CVPR 2018), rasterised from
instance annotations with pycocotools.

Layout under `root` (the first candidate that exists is used; `images_dir`
and `annotation_file`, absolute or relative to `root`, override):

    images:      images/{split}/   or  {split}2017/   or  {split}/
    annotations: annotations/instances_{split}.json, annotations/instances_{split}2017.json,
                 annotations/stuff_{split}.json, annotations/stuff_{split}2017.json,
                 annotations/{split}.json

Label mapping:
- default: class 0 = "background" (every pixel no annotation covers); the
  categories of the JSON, sorted by id, get classes 1..K-1, named after them.
- `category_map` {category id: class index}: classes are 0..max index; a class
  is named after its categories ("a+b" when several map to it), an unnamed
  class 0 is "background", other unnamed ones "class_<k>" (or pass `classes`).
  Categories missing from the map are not painted (they stay background);
  a category mapped to 255 is painted as ignore.
- crowd regions (`iscrowd=1`) of painted categories -> 255 (ignore).
- overlaps: annotations are painted from the largest `area` to the smallest, so
  smaller objects lying on larger ones stay visible (ties keep file order).

Options: `images_dir`, `annotation_file`, `category_map`, `classes`,
`skip_empty` (drop images without any painted annotation).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegDataset, read_image, require_all_exist, require_dir
from .palettes import make_palette


def _first_existing(root: Path, candidates: list[str], what: str, is_dir: bool) -> Path:
    for c in candidates:
        path = root / c
        if path.is_dir() if is_dir else path.is_file():
            return path
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"no COCO {what} found; tried {tried} (or pass {what.replace(' ', '_')}=...)")


def _under(root: Path, path) -> Path:
    """`path` as the docs read it: absolute, or relative to `root` (never to the current folder)."""
    return root / path  # an absolute path stays itself


class COCOSegmentation(SegDataset):
    def __init__(self, root, split: str = "train", transform=None, *, images_dir=None, annotation_file=None,
                 category_map: dict[int, int] | None = None, classes=None, skip_empty: bool = False):
        super().__init__(root, split, transform)
        require_dir(self.root, "images/{split}/ (or {split}2017/) and annotations/instances_{split}.json")
        if images_dir is None:
            self.images_dir = _first_existing(self.root, [f"images/{split}", f"{split}2017", split],
                                              "images dir", is_dir=True)
        else:
            self.images_dir = require_dir(_under(self.root, images_dir), "a folder of COCO images")
        if annotation_file is None:
            names = [f"instances_{split}", f"instances_{split}2017", f"stuff_{split}", f"stuff_{split}2017", split]
            self.annotation_file = _first_existing(self.root, [f"annotations/{n}.json" for n in names],
                                                   "annotation file", is_dir=False)
        else:
            self.annotation_file = _under(self.root, annotation_file)
            if not self.annotation_file.is_file():
                raise FileNotFoundError(f"annotation file not found: {self.annotation_file} (expected a COCO JSON)")
        self.coco = self._read_json(self.annotation_file)
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.cat_to_class, self.classes = self._class_table(cats, category_map, classes)
        self.palette = make_palette(len(self.classes))
        self.ids = sorted(self.coco.getImgIds())
        if skip_empty:
            self.ids = [i for i in self.ids
                        if any(a["category_id"] in self.cat_to_class for a in self.coco.imgToAnns[i])]
        if not self.ids:
            raise FileNotFoundError(f"annotation file {self.annotation_file} lists no usable images")
        require_all_exist([self._image_file(i) for i in self.ids], "image",
                          f"{self.images_dir}/<file_name from {self.annotation_file.name}>")

    @staticmethod
    def _read_json(path: Path):
        from pycocotools.coco import COCO
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
                return COCO(str(path))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read COCO annotation file {path}: {type(e).__name__}: {e}") from None

    @staticmethod
    def _class_table(cats, category_map, classes):
        if category_map is None:
            table = {c["id"]: k for k, c in enumerate(cats, 1)}
        else:
            table = {int(cid): int(k) for cid, k in category_map.items()}
            unknown = sorted(set(table) - {c["id"] for c in cats})
            bad = sorted(k for k in table.values() if not 0 <= k <= 255)
            if unknown or bad:
                raise ValueError(f"category_map: unknown category id(s) {unknown}, invalid class index(es) {bad}")
        num = max([k for k in table.values() if k != IGNORE_INDEX], default=0) + 1
        if classes is not None:
            if len(classes) != num:
                raise ValueError(f"classes has {len(classes)} names but the category map gives {num} classes")
            return table, tuple(classes)
        names = [[] for _ in range(num)]
        for c in cats:
            if table.get(c["id"], IGNORE_INDEX) != IGNORE_INDEX:
                names[table[c["id"]]].append(c["name"])
        return table, tuple("+".join(n) if n else ("background" if k == 0 else f"class_{k}")
                            for k, n in enumerate(names))

    def _image_file(self, img_id: int) -> Path:
        return self.images_dir / self.coco.imgs[img_id]["file_name"]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int):
        img_id = self.ids[i]
        info, path = self.coco.imgs[img_id], self._image_file(img_id)
        image = read_image(path)
        h, w = info["height"], info["width"]
        if image.shape[:2] != (h, w):
            raise DataError(f"size mismatch: image {path} is {image.shape[1]}x{image.shape[0]} (WxH) but "
                            f"{self.annotation_file} says {w}x{h} for image id {img_id}")
        mask = np.zeros((h, w), np.uint8)
        anns = sorted(self.coco.imgToAnns[img_id], key=lambda a: -a.get("area", 0))
        for ann in anns:
            cls = self.cat_to_class.get(ann["category_id"])
            if cls is None or not ann.get("segmentation"):
                continue
            try:
                with warnings.catch_warnings():  # pycocotools' numpy-2 copy= DeprecationWarning
                    warnings.simplefilter("ignore", DeprecationWarning)
                    region = self.coco.annToMask(ann)
            except Exception as e:  # pycocotools raises bare exceptions on malformed polygons / RLE
                raise DataError(f"{self.annotation_file}: annotation id {ann.get('id')} of image {path.name} "
                                f"has an invalid segmentation ({type(e).__name__}: {e})") from None
            if region.shape != (h, w):
                raise DataError(f"{self.annotation_file}: annotation id {ann.get('id')} of image {path.name} is "
                                f"{region.shape[1]}x{region.shape[0]} (WxH), image is {w}x{h}")
            mask[region.astype(bool)] = IGNORE_INDEX if ann.get("iscrowd") else cls
        return image, mask, path.stem
