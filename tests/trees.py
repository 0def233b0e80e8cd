"""Miniature dataset trees in the official layouts, for command-line tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 64, 80


def _scene(seed: int, classes: list[int]):
    """An image whose vertical bands are coloured by class, and its label map."""
    rng = np.random.default_rng(seed)
    label = np.zeros((H, W), np.uint8)
    bounds = np.sort(rng.choice(np.arange(8, W - 8), len(classes) - 1, replace=False))
    for c, (a, b) in zip(classes, zip([0, *bounds], [*bounds, W])):
        label[:, a:b] = c
    colours = {c: rng.integers(0, 255, 3) for c in classes}
    image = np.stack([colours[c] for c in label.ravel()]).reshape(H, W, 3).astype(np.uint8)
    return image, label


def _png(path: Path, array, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode="P" if palette is not None else None)
    if palette is not None:
        img.putpalette(palette)
    img.save(path)


def make_voc(root: Path, n: int = 6) -> Path:
    voc = Path(root) / "VOC2012"
    names = [f"2007_{i:06d}" for i in range(n)]
    palette = np.random.default_rng(0).integers(0, 255, (256, 3), dtype=np.uint8).ravel().tolist()
    for i, name in enumerate(names):
        image, label = _scene(i, [0, 1 + i % 20, 15])
        label[:2] = 255  # VOC's void border
        _png(voc / "JPEGImages" / f"{name}.png", image)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=98)
        (voc / "JPEGImages" / f"{name}.png").unlink()
        _png(voc / "SegmentationClass" / f"{name}.png", label, palette)
        _png(voc / "SegmentationClassAug" / f"{name}.png", label)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(names[: n - 2]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[n - 2:]) + "\n")
    (sets / "train_aug.txt").write_text("\n".join(names[: n - 2]) + "\n")
    return voc


def make_cityscapes(root: Path, n: int = 6) -> Path:
    root = Path(root) / "cityscapes"
    for i in range(n):
        split = "train" if i < n - 2 else "val"
        stem = f"aachen_{i:06d}_000019"
        image, label = _scene(i, [7, 8, 26, 0])  # road, sidewalk, car, unlabelled
        _png(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", image)
        _png(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", label)
    return root


def make_coco(root: Path, n: int = 6) -> Path:
    root = Path(root) / "coco"
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    for split, ids in (("train", range(n - 2)), ("val", range(n - 2, n))):
        images, anns = [], []
        for i in ids:
            image, _ = _scene(i, [0, 1])
            name = f"{i:012d}.jpg"
            (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / f"{split}2017" / name, quality=98)
            images.append({"id": i, "file_name": name, "height": H, "width": W})
            anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 400.0,
                         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]], "bbox": [10, 10, 20, 20]})
            anns.append({"id": 2 * i + 2, "image_id": i, "category_id": 3, "iscrowd": 0, "area": 300.0,
                         "segmentation": [[40, 30, 70, 30, 70, 50, 40, 50]], "bbox": [40, 30, 30, 20]})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def make_folder(root: Path, n: int = 6, num_classes: int = 3) -> Path:
    root = Path(root) / "mydata"
    for i in range(n):
        split = "train" if i < n - 2 else "val"
        image, label = _scene(i, list(range(num_classes)))
        _png(root / split / "images" / f"img{i}.png", image)
        _png(root / split / "masks" / f"img{i}.png", label)
    return root
