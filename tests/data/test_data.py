"""zoo.data: miniature trees in the official layouts, label remapping, errors that name the culprit."""
import json
import re
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import DATASETS, DataError, SegDataset, build_dataset, colorize, dataset_options
from zoo.data.base import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.palettes import CITYSCAPES_ID_TO_TRAINID, VOC_PALETTE

H, W = 40, 50


def _image(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _write_gray(path, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label.astype(np.uint8))


def _write_palette_png(path, indices):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", indices.shape[::-1], np.ascontiguousarray(indices, np.uint8).tobytes())
    im.putpalette(VOC_PALETTE.tobytes() + bytes(3 * (256 - 21)))
    im.save(path)


def _stripes(values, h=H, w=W):
    """A label map made of vertical bands, one per value."""
    label = np.zeros((h, w), np.uint8)
    for k, v in enumerate(values):
        label[:, k * w // len(values):(k + 1) * w // len(values)] = v
    return label


# ----------------------------------------------------------------------------- registry

def test_unknown_dataset_names_close_match():
    with pytest.raises(ValueError, match="cityscapes"):
        build_dataset("citiscapes", "/nowhere", "train")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="num_imagez"):
        build_dataset("synthetic", None, "train", num_imagez=3)
    assert set(DATASETS) == {"voc", "cityscapes", "camvid", "coco", "ade20k", "folder", "synthetic"}
    assert dataset_options("voc") == ["aug_dir", "list_file"]


def test_datasets_declare_their_augmentation_family():
    from zoo.data import dataset_family, register_dataset
    from zoo.data.transforms import default_train_entries
    assert {n: dataset_family(n) for n in DATASETS} == {
        "voc": "natural", "cityscapes": "natural", "camvid": "natural", "coco": "natural",
        "ade20k": "natural", "folder": "natural", "synthetic": "synthetic"}
    # a dataset's name and its family give the same defaults
    assert default_train_entries("camvid", (8, 8)) == default_train_entries("natural", (8, 8))
    assert [e["name"] for e in default_train_entries("synthetic", None)] == ["HorizontalFlip"]
    with pytest.raises(TypeError, match="expected a SegDataset subclass"):
        register_dataset("not_a_dataset", dict)
    with pytest.raises(ValueError, match="'voc' is already registered"):
        register_dataset("voc", DATASETS.get("voc"))


@pytest.mark.parametrize("name", ["voc", "cityscapes", "camvid", "coco", "folder"])
def test_missing_root_names_path(tmp_path, name):
    root = tmp_path / "absent"
    opts = {"num_classes": 2} if name == "folder" else {}
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(name, root, "train", **opts)
    msg = str(e.value)
    assert str(root) in msg and "\n" not in msg


# ----------------------------------------------------------------------------- VOC

@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    labels = {"a": _stripes([0, 15, 255, 20]), "b": _stripes([0, 1])}
    for n, (stem, label) in enumerate(labels.items()):
        _write_rgb(root / "JPEGImages" / f"{stem}.jpg", _image(n))
        _write_palette_png(root / "SegmentationClass" / f"{stem}.png", label)
        _write_gray(root / "SegmentationClassAug" / f"{stem}.png", label)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "/JPEGImages/b.jpg /SegmentationClassAug/b.png\n")
    return root, labels


def test_voc_palette_png_read_as_indices(voc_root):
    root, labels = voc_root
    ds = build_dataset("voc", root.parent.parent, "train")  # the folder above VOCdevkit is accepted too
    assert len(ds) == 2 and ds.num_classes == 21 and ds.palette.shape == (21, 3)
    image, mask, name = ds.load(0)
    assert name == "a" and image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(mask, labels["a"])  # 15 stays 15 (not a colour), 255 kept
    assert tuple(VOC_PALETTE[15]) == (192, 128, 128)


def test_voc_train_aug(voc_root):
    root, labels = voc_root
    ds = build_dataset("voc", root, "train_aug")
    assert len(ds) == 1
    np.testing.assert_array_equal(ds.load(0)[1], labels["b"])


def test_voc_train_aug_without_sbd_says_how_to_train_on_voc(voc_root):
    root, _ = voc_root
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("voc", root, "train_aug")
    assert str(e.value) == (f"split train_aug (VOC 2012 + SBD) needs {root}/ImageSets/Segmentation/"
                            "train_aug.txt, which does not exist; add SBD's SegmentationClassAug masks "
                            "and train_aug.txt, or pass data.train_split=train to train on plain VOC 2012")
    shutil.rmtree(root / "SegmentationClassAug")
    with pytest.raises(FileNotFoundError, match=rf"needs {re.escape(str(root))}/SegmentationClassAug, "
                                                 r"which does not exist; .*data.train_split=train"):
        build_dataset("voc", root, "train_aug")


def test_relative_roots_resolve_from_the_current_folder_or_zoo_data(tmp_path, monkeypatch):
    from zoo.data.base import resolve_root
    work, store = tmp_path / "work", tmp_path / "store"
    (work / "local").mkdir(parents=True)
    (store / "shared").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("ZOO_DATA", raising=False)
    assert resolve_root(None) is None
    assert resolve_root("local") == work / "local"
    with pytest.raises(FileNotFoundError) as e:
        resolve_root("shared")
    assert str(e.value) == (f"data.root 'shared' not found: {work}/shared (the current folder) does not "
                            "exist; a relative root is read from the current folder or from $ZOO_DATA "
                            "(not set)")
    monkeypatch.setenv("ZOO_DATA", str(store))
    assert resolve_root("shared") == store / "shared"
    assert resolve_root("local") == work / "local"  # the current folder first
    assert resolve_root(str(store / "x")) == store / "x"  # absolute: as given (the dataset names it)
    with pytest.raises(FileNotFoundError) as e:
        resolve_root("camvid")
    assert str(e.value) == (f"data.root 'camvid' not found: neither {work}/camvid (the current folder) "
                            f"nor {store}/camvid ($ZOO_DATA) exists")


def test_a_relative_list_file_is_read_under_root_never_the_current_folder(voc_root, tmp_path, monkeypatch):
    root, _ = voc_root
    (root / "ImageSets" / "Segmentation" / "mine.txt").write_text("b\n")
    decoy = tmp_path / "elsewhere" / "ImageSets" / "Segmentation" / "mine.txt"
    decoy.parent.mkdir(parents=True)
    decoy.write_text("a\n")  # the same relative path where the command runs
    monkeypatch.chdir(tmp_path / "elsewhere")
    ds = build_dataset("voc", root, "train", list_file="ImageSets/Segmentation/mine.txt")
    assert [s[0].name for s in ds.samples] == ["b.jpg"]
    assert len(build_dataset("voc", root, "train", list_file=str(decoy))) == 1  # absolute: as given


def test_voc_missing_list_file_and_bad_label(voc_root):
    root, _ = voc_root
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*expected layout"):
        build_dataset("voc", root, "val")
    bad = root / "SegmentationClass" / "b.png"
    _write_palette_png(bad, _stripes([0, 21, 40]))
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}.*21, 40"):
        build_dataset("voc", root, "train").load(1)


# ----------------------------------------------------------------------------- Cityscapes

@pytest.fixture
def cityscapes_root(tmp_path):
    root = tmp_path / "cityscapes"
    for city, stem in [("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")]:
        _write_rgb(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", _image())
        _write_gray(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", _stripes([7, 26, 0, 33, 9]))
    # bonn also has a trainIds file, which wins
    _write_gray(root / "gtFine" / "train" / "bonn" / "bonn_000001_000019_gtFine_labelTrainIds.png",
                _stripes([18, 255, 3]))
    return root


def test_cityscapes_id_to_trainid(cityscapes_root):
    ds = build_dataset("cityscapes", cityscapes_root, "train")
    assert len(ds) == 2 and ds.num_classes == 19
    _, mask, name = ds.load(0)
    assert name == "aachen_000000_000019"
    np.testing.assert_array_equal(mask, _stripes([0, 13, 255, 18, 255]))
    np.testing.assert_array_equal(ds.load(1)[1], _stripes([18, 255, 3]))
    assert len(CITYSCAPES_ID_TO_TRAINID) == 19 and sorted(CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))


def test_cityscapes_errors(cityscapes_root):
    with pytest.raises(FileNotFoundError, match=r"gtCoarse.*expected layout"):
        build_dataset("cityscapes", cityscapes_root, "train", annotation="gtCoarse")
    bad = cityscapes_root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    _write_gray(bad, _stripes([7, 40]))
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}.*40"):
        build_dataset("cityscapes", cityscapes_root, "train").load(0)


# ----------------------------------------------------------------------------- CamVid

@pytest.fixture
def camvid_tree(tmp_path):
    root = tmp_path / "CamVid"
    for n, stem in enumerate(["f1", "f2"]):
        _write_rgb(root / "train" / f"{stem}.png", _image(n))
        _write_gray(root / "trainannot" / f"{stem}.png", _stripes([0, 10, 11, 3]))
    (root / "train.txt").write_text("train/f1.png trainannot/f1.png\n"
                                    "/SegNet/CamVid/train/f2.png /SegNet/CamVid/trainannot/f2.png\n")
    return root


def test_camvid_void_to_ignore_and_absolute_lines(camvid_tree):
    ds = build_dataset("camvid", camvid_tree, "train")
    assert len(ds) == 2 and ds.num_classes == 11
    for i in range(2):
        np.testing.assert_array_equal(ds.load(i)[1], _stripes([0, 10, 255, 3]))
    assert ds.load(1)[2] == "f2"


def test_camvid_errors_name_the_file(camvid_tree):
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        build_dataset("camvid", camvid_tree, "val")
    ds = build_dataset("camvid", camvid_tree, "train")
    label = camvid_tree / "trainannot" / "f1.png"
    _write_gray(label, _stripes([0, 1], h=H, w=W - 1))
    image = re.escape(str(camvid_tree / "train" / "f1.png"))
    with pytest.raises(DataError, match=rf"size mismatch.*{image} is 50x40.*{re.escape(str(label))} is 49x40"):
        ds.load(0)
    _write_gray(label, _stripes([0, 12]))
    with pytest.raises(DataError, match=rf"{re.escape(str(label))}.*invalid value\(s\) 12"):
        ds.load(0)
    corrupt = camvid_tree / "train" / "f2.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=rf"cannot read image file {re.escape(str(corrupt))}"):
        ds[1]


def test_camvid_listed_file_missing_fails_at_construction(camvid_tree):
    (camvid_tree / "trainannot" / "f2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"trainannot/f2\.png"):
        build_dataset("camvid", camvid_tree, "train")


def test_camvid_real_frames(camvid_root):
    train, val = build_dataset("camvid", camvid_root, "train"), build_dataset("camvid", camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    image, mask, name = val.load(0)
    assert image.shape == (360, 480, 3) and mask.shape == (360, 480) and name == val.samples[0][0].stem
    assert set(np.unique(mask)) <= set(range(11)) | {255}
    sample = train[5]
    assert sample["image"].dtype == torch.float32 and sample["mask"].dtype == torch.int64


# ----------------------------------------------------------------------------- COCO

@pytest.fixture
def coco_root(tmp_path):
    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    _write_rgb(root / "images" / "train" / "img1.png", _image())
    _write_rgb(root / "images" / "train" / "img2.png", _image(1))
    person = np.zeros((H, W), np.uint8)
    person[15:20, 15:20] = 1  # inside the car polygon: smaller, so painted on top
    rle = mask_utils.encode(np.asfortranarray(person))
    rle["counts"] = rle["counts"].decode()
    crowd = np.zeros((H, W), np.uint8)
    crowd[30:38, 40:48] = 1
    crowd_rle = {"size": [H, W], "counts": [int(c) for c in _uncompressed_counts(crowd)]}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 25, "iscrowd": 0,
         "bbox": [15, 15, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": [[10, 10, 30, 10, 30, 25, 10, 25]],
         "area": 300, "iscrowd": 0, "bbox": [10, 10, 20, 15]},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": crowd_rle, "area": 64, "iscrowd": 1,
         "bbox": [40, 30, 8, 8]},
    ]
    data = {"images": [{"id": 1, "file_name": "img1.png", "height": H, "width": W},
                       {"id": 2, "file_name": "img2.png", "height": H, "width": W}],
            "annotations": anns,
            "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def _uncompressed_counts(binary):
    flat = binary.ravel(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes]))


def test_coco_polygon_rle_crowd_and_overlap(coco_root):
    ds = build_dataset("coco", coco_root, "train")
    assert ds.classes == ("background", "person", "car") and len(ds) == 2
    _, mask, name = ds.load(0)
    assert name == "img1"
    assert mask[12, 12] == 2 and mask[22, 25] == 2          # polygon -> car
    assert (mask[15:20, 15:20] == 1).all()                  # RLE person on top of the larger car
    assert (mask[30:38, 40:48] == 255).all()                # crowd -> ignore
    assert mask[2, 2] == 0 and mask[35, 5] == 0
    assert (ds.load(1)[1] == 0).all()                       # no annotations: all background
    assert len(build_dataset("coco", coco_root, "train", skip_empty=True)) == 1


def test_coco_category_map_and_missing_annotations(coco_root):
    ds = build_dataset("coco", coco_root, "train", category_map={"3": 1})
    assert ds.classes == ("background", "car")
    _, mask, _ = ds.load(0)
    assert mask[12, 12] == 1 and mask[16, 16] == 1 and mask[33, 44] == 0  # person unmapped: not painted
    with pytest.raises(FileNotFoundError, match=r"instances_val\.json"):
        build_dataset("coco", coco_root, "val", images_dir="images/train")
    with pytest.raises(ValueError, match="unknown category id"):
        build_dataset("coco", coco_root, "train", category_map={99: 1})


# ----------------------------------------------------------------------------- folder

def test_folder_split_layout_and_colour_masks(tmp_path):
    root = tmp_path / "mine"
    _write_rgb(root / "train" / "images" / "x.jpg", _image())
    _write_gray(root / "train" / "masks" / "x.png", _stripes([0, 2, 255]))
    ds = build_dataset("folder", root, "train", num_classes=3)
    assert ds.classes == ("class_0", "class_1", "class_2") and len(ds) == 1
    np.testing.assert_array_equal(ds.load(0)[1], _stripes([0, 2, 255]))

    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    _write_rgb(root / "val" / "images" / "y.png", _image())
    _write_rgb(root / "val" / "masks" / "y.png", colorize(_stripes([2, 1]), np.array(palette, np.uint8)))
    ds = build_dataset("folder", root, "val", classes=["bg", "red", "blue"], palette=palette)
    np.testing.assert_array_equal(ds.load(0)[1], _stripes([2, 1]))
    _write_rgb(root / "val" / "masks" / "y.png", np.full((H, W, 3), 7, np.uint8))
    with pytest.raises(DataError, match=r"y\.png.*\(7,7,7\)"):
        ds.load(0)


def test_folder_flat_layout_errors(tmp_path):
    root = tmp_path / "flat"
    for stem in ("p", "q"):
        _write_rgb(root / "images" / f"{stem}.png", _image())
        _write_gray(root / "masks" / f"{stem}.png", _stripes([0, 1]))
    (root / "val.txt").write_text("q\n")
    with pytest.warns(UserWarning, match=r"no train/ folder nor train.txt, so split 'train' is every pair in "
                                         r"images/ and masks/, the same frames as any other split"):
        assert len(build_dataset("folder", root, "train", classes=["a", "b"])) == 2  # q, val's frame, too
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a listed split is its own
        assert len(build_dataset("folder", root, "val", classes=["a", "b"])) == 1
    with pytest.raises(ValueError, match="num_classes"):
        build_dataset("folder", root, "train")
    (root / "masks" / "p.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/p\.png"), pytest.warns(UserWarning, match="every pair"):
        build_dataset("folder", root, "train", classes=["a", "b"])


# ----------------------------------------------------------------------------- synthetic and the contract

def test_synthetic_is_deterministic_and_covers_every_class():
    a = build_dataset("synthetic", None, "train", num_images=8)
    b = build_dataset("synthetic", None, "train", num_images=8)
    assert len(a) == 8 and len(build_dataset("synthetic", None, "val")) == 64
    for i in (0, 5):
        (ia, ma, na), (ib, mb, nb) = a.load(i), b.load(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
        assert na == nb
    assert not np.array_equal(a.load(0)[0], build_dataset("synthetic", None, "val").load(0)[0])
    seen = set()
    for i in range(8):
        image, mask, _ = a.load(i)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and mask.dtype == np.uint8
        seen |= set(np.unique(mask).tolist())
    assert seen == set(range(len(a.classes))) and len(a.classes) == len(a.palette) == 6


def test_getitem_without_transform_normalises():
    ds = build_dataset("synthetic", None, "val", num_images=2, size=(32, 48))
    sample = ds[-1]
    image, mask, _ = ds.load(1)
    assert sample["image"].shape == (3, 32, 48) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (32, 48) and sample["mask"].dtype == torch.int64
    expected = (image[3, 4] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(sample["image"][:, 3, 4].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sample["mask"].numpy(), mask)
    assert sample["name"] == "val_000001"
    with pytest.raises(IndexError):
        ds[2]


def test_every_dataset_class_follows_the_contract():
    for cls in DATASETS.values():
        assert issubclass(cls, SegDataset) and cls.ignore_index == 255
