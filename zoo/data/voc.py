"""PASCAL VOC 2012 segmentation (Everingham et al., IJCV 2010), with the SBD
augmentation (Hariharan et al., ICCV 2011) as split `train_aug`.

Layout under `root` (a `VOCdevkit/VOC2012` folder; `root` may also be the
folder holding `VOC2012` or `VOCdevkit`):

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png          palette PNGs: index 0..20, 255 = border / difficult
    ImageSets/Segmentation/{train,val,trainval}.txt    one name a line
    SegmentationClassAug/<name>.png       (train_aug only) plain index PNGs, same values
    ImageSets/Segmentation/train_aug.txt  (train_aug only)

Options: `aug_dir` (default "SegmentationClassAug"), `list_file` (a list file,
absolute or relative to `root`, to use instead of
`ImageSets/Segmentation/{split}.txt`). List lines may be
bare names or DeepLab-style "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
pairs; the name is the first token's stem.
"""
from __future__ import annotations

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
from .palettes import VOC_CLASSES, VOC_PALETTE

LAYOUT = ("VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/<split>.txt}"
          " (+ SegmentationClassAug/*.png, ImageSets/Segmentation/train_aug.txt for train_aug)")
_LUT = make_lut({**{k: k for k in range(21)}, 255: IGNORE_INDEX})


def _find_voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    require_dir(root, LAYOUT)
    return require_dir(root / "JPEGImages", LAYOUT)  # raises, naming the folder


def _require_sbd(mask_dir: Path, lst: Path) -> None:
    """train_aug needs the SBD masks converted to VOC's format; without them, say how
    to train on VOC 2012 alone instead."""
    for path, is_there in ((mask_dir, mask_dir.is_dir()), (lst, lst.is_file())):
        if not is_there:
            raise FileNotFoundError(
                f"split train_aug (VOC 2012 + SBD) needs {path}, which does not exist; add SBD's "
                "SegmentationClassAug masks and train_aug.txt, or pass data.train_split=train "
                "to train on plain VOC 2012")


class VOCSegmentation(SegDataset):
    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(self, root, split: str = "train", transform=None, *,
                 aug_dir: str = "SegmentationClassAug", list_file: str | Path | None = None):
        super().__init__(root, split, transform)
        self.root = _find_voc_root(self.root)
        mask_dir = self.root / (aug_dir if split == "train_aug" else "SegmentationClass")
        # Relative to root only: a file of the same relative path in the current folder (another
        # data set's list, say) must not be read in its place.
        lst = self.root / (list_file or Path("ImageSets") / "Segmentation" / f"{split}.txt")
        if split == "train_aug":
            _require_sbd(mask_dir, lst)
        require_dir(mask_dir, LAYOUT)
        names = [Path(line.split()[0]).stem for line in require_file(lst, LAYOUT).read_text().splitlines()
                 if line.strip()]
        if not names:
            raise FileNotFoundError(f"list file {lst} names no images (expected one image name a line)")
        self.samples = [(self.root / "JPEGImages" / f"{n}.jpg", mask_dir / f"{n}.png") for n in names]
        require_all_exist([s[0] for s in self.samples], "image", LAYOUT)
        require_all_exist([s[1] for s in self.samples], "mask", LAYOUT)

    def read_mask(self, path):
        return remap_labels(read_label(path), _LUT, path, "VOC indices 0..20 or 255")
