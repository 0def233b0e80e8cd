"""zoo.data.transforms: albumentations pipelines from recipe entries."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.data import SegDataset, build_dataset, build_transform
from zoo.data.base import IMAGENET_MEAN, IMAGENET_STD


def _sample(h=40, w=50):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 3, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("family", ["voc", "cityscapes", "camvid", "coco", "folder", "synthetic"])
def test_default_train_pipeline_shapes_and_dtypes(family):
    image, mask = _sample()
    out = build_transform(None, train=True, family=family, crop_size=(32, 48))(image=image, mask=mask)
    assert out["image"].shape == (3, 32, 48) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (32, 48) and out["mask"].dtype == torch.int64
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2, 255}


def test_crop_pads_mask_with_ignore():
    image, mask = _sample()
    t = build_transform(None, train=True, family="synthetic", crop_size=(64, 80))  # no scale: padding certain
    out = t(image=image, mask=mask)
    assert out["mask"].shape == (64, 80)
    assert int((out["mask"] == 255).sum()) == 64 * 80 - 40 * 50
    padded = out["image"][:, out["mask"] == 255]
    zero = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(padded, zero[:, None].expand_as(padded))  # image padded with 0


def test_recipe_entries_fill_invented_mask_pixels_with_ignore():
    """A Rotate or PadIfNeeded listed without fill_mask would paint class 0 (albumentations'
    default) where the image has no pixels; the pipeline makes that the ignored value."""
    image, mask = _sample()
    mask[:] = 2
    rotate = {"name": "Rotate", "params": {"limit": [45, 45], "p": 1.0}}
    pad = {"name": "OneOf", "params": {"transforms": [{"name": "PadIfNeeded", "params": {
        "min_height": 64, "min_width": 80, "border_mode": 0}}], "p": 1.0}}
    for entries in ([rotate], [pad]):
        out = build_transform(entries, train=True, family="natural", crop_size=None)(image=image, mask=mask)
        assert set(out["mask"].unique().tolist()) == {2, 255}, entries[0]["name"]
    named = {"name": "Rotate", "params": {"limit": [45, 45], "p": 1.0, "fill_mask": 0}}  # named: kept
    out = build_transform([named], train=True, family="natural", crop_size=None)(image=image, mask=mask)
    assert set(out["mask"].unique().tolist()) == {0, 2}


def test_eval_pipeline_only_normalises():
    image, mask = _sample(37, 53)
    out = build_transform(None, train=False, family="cityscapes", crop_size=(16, 16),
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image=image, mask=mask)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out["image"], expected)
    assert torch.equal(out["mask"], torch.from_numpy(mask).long())


def test_entries_build_in_order_and_nest():
    entries = [{"name": "OneOf", "params": {"transforms": [{"name": "HorizontalFlip", "params": {"p": 1.0}},
                                                           {"name": "VerticalFlip", "params": {"p": 1.0}}], "p": 1.0}},
               {"name": "CenterCrop", "params": {"height": 20, "width": 30}}]
    t = build_transform(entries, train=True, family="voc", crop_size=None)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["OneOf", "CenterCrop", "Normalize", "Lambda", "ToTensorV2"]
    image, mask = _sample()
    out = t(image=image, mask=mask)
    assert out["image"].shape == (3, 20, 30) and out["mask"].dtype == torch.int64


def test_entry_errors_name_the_culprit():
    with pytest.raises(ValueError, match="HorizontalFlip"):
        build_transform([{"name": "HorizontalFlipp"}], train=True, family="voc", crop_size=None)
    with pytest.raises(ValueError, match=r"RandomCrop.*height"):
        build_transform([{"name": "RandomCrop", "params": {"height": "tall", "width": 3}}],
                        train=True, family="voc", crop_size=None)
    with pytest.raises(ValueError, match=r"HorizontalFlip.*prob"):
        build_transform([{"name": "HorizontalFlip", "params": {"prob": 0.5}}], train=True, family="voc", crop_size=None)
    with pytest.raises(ValueError, match="Normalize"):
        build_transform([{"name": "Normalize"}], train=True, family="voc", crop_size=None)
    with pytest.raises(ValueError, match="cityscapes"):
        build_transform(None, train=True, family="cityscape", crop_size=None)


def test_dataset_with_transform_follows_contract():
    t = build_transform(None, train=True, family="synthetic", crop_size=(64, 64))
    sample = build_dataset("synthetic", None, "train", transform=t, num_images=2)[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (64, 64) and sample["mask"].dtype == torch.int64


class _Same(SegDataset):
    """The same asymmetric sample at every index: only the augmentation differs."""
    classes = ("a", "b")

    def __len__(self):
        return 16

    def load(self, i):
        mask = np.zeros((4, 6), np.uint8)
        mask[:, :2] = 1
        return np.zeros((4, 6, 3), np.uint8), mask, str(i)


def test_loader_workers_draw_different_augmentations():
    t = build_transform([{"name": "HorizontalFlip", "params": {"p": 0.5}}], train=True, family="folder", crop_size=None)
    flips = [bool(b["mask"][0, 0, 0] == 0) for b in DataLoader(_Same(None, "train", t), batch_size=1, num_workers=2)]
    worker0, worker1 = flips[0::2], flips[1::2]
    assert worker0 != worker1  # forked workers must not share one albumentations RNG state
