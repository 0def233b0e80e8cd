"""The dataset contract shared by every format in `zoo.data`.

A `SegDataset` knows its `classes`, `palette` and `ignore_index`, the label
value of unlabelled pixels: `IGNORE_INDEX` (255) for every built-in format; a
subclass may set its own, and a run may choose another for an instance (the
recipe's `data.ignore_index`; its transform then relabels the format's value).
`load(i)` returns the raw sample: uint8 RGB image (H, W, 3), uint8 label map
(H, W) already remapped to train ids 0..K-1 with the format's unlabelled value,
and a name (the file stem). `__getitem__(i)` applies the transform (an
albumentations Compose or any callable taking `image=`, `mask=` and returning
a dict with those keys) and returns
`{"image": float32 (3, H, W), "mask": int64 (H, W), "name": str}`.

Problems are reported where they can be named: missing folders and list files
when the dataset is built (`FileNotFoundError`, one line: path and expected
layout); unreadable files, image/mask size mismatches and invalid label values
in `load` (`DataError`, naming the file and the values).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

IGNORE_INDEX = 255  # the one default; loss, metrics, transforms and pictures take it from here
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN255 = np.array(IMAGENET_MEAN, np.float32) * 255
_STD255 = np.array(IMAGENET_STD, np.float32) * 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A sample that cannot be used as it is: the message names the file and the problem."""


# ----------------------------------------------------------------------------- file checks

def require_dir(path: Path, layout: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"folder not found: {path} (expected layout: {layout})")
    return path


def resolve_root(root) -> Path | None:
    """A recipe's `data.root` as an absolute path. A relative root is read from the
    current folder, or from `$ZOO_DATA` when it is set and the folder exists there;
    when neither holds it, the error names every absolute path tried."""
    if root is None:
        return None
    path = Path(root).expanduser()
    if path.is_absolute():
        return path
    tried = [(Path.cwd() / path, "the current folder")]
    if os.environ.get("ZOO_DATA"):
        tried.append((Path(os.environ["ZOO_DATA"]).expanduser().absolute() / path, "$ZOO_DATA"))
    for candidate, _ in tried:
        if candidate.exists():
            return candidate
    where = " nor ".join(f"{c} ({what})" for c, what in tried)
    if len(tried) == 1:
        raise FileNotFoundError(f"data.root {str(root)!r} not found: {where} does not exist; a relative "
                                "root is read from the current folder or from $ZOO_DATA (not set)")
    raise FileNotFoundError(f"data.root {str(root)!r} not found: neither {where} exists")


def require_file(path: Path, layout: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path} (expected layout: {layout})")
    return path


def require_all_exist(paths: Sequence[Path], what: str, layout: str) -> None:
    """Fail at construction, not in a loader worker, when listed files are absent."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{len(missing)} {what} file(s) missing: {shown} (expected layout: {layout})")


# ----------------------------------------------------------------------------- decoding

def read_image(path: Path) -> np.ndarray:
    """Decode an image file as uint8 RGB (H, W, 3)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot read image file {path} (missing, corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _is_palette_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    # PNG signature (8) + IHDR length/type (8) + width/height (8) + bit depth (1) + colour type (1)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] == 3


def read_label(path: Path) -> np.ndarray:
    """Decode a label image unchanged: palette PNGs as indices (PIL), others with OpenCV."""
    path = Path(path)
    try:
        if path.is_file() and _is_palette_png(path):
            from PIL import Image
            with Image.open(path) as im:
                return np.asarray(im)  # mode "P" -> the indices, not the colours
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read label file {path}: {e}") from None
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DataError(f"cannot read label file {path} (missing, corrupt or not an image)")
    if label.ndim == 3 and label.shape[2] in (3, 4):
        label = cv2.cvtColor(label, cv2.COLOR_BGRA2RGB if label.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return label


def make_lut(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry raw value -> train id table; -1 marks values the format never contains."""
    lut = np.full(256, -1, np.int16)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


def remap_labels(label: np.ndarray, lut: np.ndarray, path, expected: str) -> np.ndarray:
    """Raw label map -> uint8 train ids through `lut`; values the table rejects name the file."""
    if label.ndim != 2:
        raise DataError(f"label file {path} has shape {label.shape}; expected a single-channel (H, W) map")
    if label.dtype != np.uint8:
        wide = label.astype(np.int64)
        bad = np.unique(wide[(wide < 0) | (wide > 255)])
        if bad.size:
            raise DataError(f"label file {path} has invalid value(s) {_few(bad)}; expected {expected}")
        label = wide.astype(np.uint8)
    seen = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero((seen > 0) & (lut < 0))
    if bad.size:
        raise DataError(f"label file {path} has invalid value(s) {_few(bad)}; expected {expected}")
    return np.where(lut < 0, IGNORE_INDEX, lut).astype(np.uint8)[label]


def _few(values: np.ndarray, n: int = 8) -> str:
    values = [int(v) for v in values]
    return ", ".join(map(str, values[:n])) + (f", ... ({len(values)} in all)" if len(values) > n else "")


def check_sizes(image: np.ndarray, mask: np.ndarray, image_file, mask_file) -> None:
    if image.shape[:2] != mask.shape[:2]:
        (h, w), (mh, mw) = image.shape[:2], mask.shape[:2]
        raise DataError(f"size mismatch: image {image_file} is {w}x{h} (WxH) but mask {mask_file} is {mw}x{mh}")


# ----------------------------------------------------------------------------- the dataset

def to_tensors(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Whatever a transform returned -> (float32 (3, H, W), int64 (H, W)).

    uint8 arrays are scaled to [0, 1] and normalised with the ImageNet mean/std;
    float arrays and tensors are taken as already normalised.
    """
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            image = (image.astype(np.float32) - _MEAN255) / _STD255
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
    image = image.float()
    mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).long()
    return image, mask


class SegDataset(Dataset):
    """Base class: subclasses fill `classes`, `palette` and either `samples`
    (a list of `(image_file, label_file)`; `read_mask` turns a label file into
    train ids) or override `load` and `__len__`."""

    classes: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    ignore_index: int = IGNORE_INDEX
    # Which default training augmentation suits it (zoo.data.transforms.AUGMENTATION_FAMILIES):
    # "natural" photographs (scale and colour jitter), "synthetic" renderings (flips only).
    family: str = "natural"

    def __init__(self, root, split: str, transform: Callable | None = None):
        self.root = Path(root) if root is not None else None
        self.split = split
        self.transform = transform
        self.samples: list[tuple[Path, Path]] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={self.root}, split={self.split!r}, len={len(self)}, "
                f"classes={self.num_classes})")

    def read_mask(self, path: Path) -> np.ndarray:
        """Label file -> uint8 train ids; default: values 0..K-1 and the format's own
        unlabelled value (the class's `ignore_index`; a run may relabel it) as they are."""
        ignore = type(self).ignore_index
        lut = make_lut({**{k: k for k in range(self.num_classes)}, ignore: ignore})
        return remap_labels(read_label(path), lut, path, f"0..{self.num_classes - 1} or {ignore}")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_file, mask_file = self.samples[i]
        image = read_image(image_file)
        mask = self.read_mask(mask_file)
        check_sizes(image, mask, image_file, mask_file)
        return image, mask, self.name_of(image_file)

    def name_of(self, image_file: Path) -> str:
        return Path(image_file).stem

    def _reseed_in_worker(self) -> None:
        # albumentations 2.x keeps its own RNG in the Compose; forked loader workers would all
        # inherit the same state and draw the same augmentations, so each worker reseeds once.
        info = get_worker_info()
        if info is None or not hasattr(self.transform, "set_random_seed"):
            return
        key = (os.getpid(), info.seed)
        if getattr(self, "_worker_key", None) != key:
            self.transform.set_random_seed(info.seed % 2**32)
            self._worker_key = key

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {len(self)}")
        image, mask, name = self.load(i % len(self))
        if self.transform is not None:
            self._reseed_in_worker()
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image, mask = to_tensors(image, mask)
        return {"image": image, "mask": mask, "name": name}
