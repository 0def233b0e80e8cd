"""The unlabelled value flows from the dataset (`SegDataset.ignore_index`) or the
recipe (`data.ignore_index`) into padding, loss, class weights, metrics and
pictures; here with a dataset that marks unlabelled pixels 7, not 255."""
from __future__ import annotations

import json

import numpy as np
import pytest

import zoo.data
import zoo.data.transforms
from zoo.data import make_dataset
from zoo.data.base import SegDataset
from zoo.engine import trainer as T
from zoo.engine.recipe import recipe_from_dict
from zoo.hub import formats as ckpt

H = W = 40
UNLABELLED_ROWS = 5  # the top rows of every mask are 7


class Sevens(SegDataset):
    classes = ("left", "middle", "right")
    palette = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
    ignore_index = 7

    def __len__(self):
        return 4

    def load(self, i):
        mask = np.zeros((H, W), np.uint8)
        mask[:, 13:26], mask[:, 26:] = 1, 2
        mask[:UNLABELLED_ROWS] = 7
        rng = np.random.default_rng(i)
        image = (self.palette[np.minimum(mask, 2)] * 0.8 + rng.integers(0, 50, (H, W, 3))).astype(np.uint8)
        return image, mask, f"s{i}"


@pytest.fixture
def sevens(monkeypatch):
    monkeypatch.setitem(zoo.data.DATASETS, "sevens", Sevens)


def _recipe(**data):
    return recipe_from_dict({
        "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
                  "decoder_channels": [16, 16, 8, 8, 8]},
        # crops of 96 from images scaled at most x2 (80): the default pipeline always pads
        "data": {"dataset": "sevens", "batch_size": 2, "num_workers": 0, "crop_size": [96, 96], **data},
        "train": {"iters": 2, "checkpoint_interval": 2, "class_weights": "median_frequency"},
        "eval": {"interval": 2, "max_images": 2}, "log": {"num_images": 1}})


@pytest.mark.train
def test_training_uses_the_datasets_ignore_index(sevens, tmp_path):
    run = tmp_path / "run"
    T.train(_recipe(), run)  # 255-filled padding or a loss ignoring 255 stop at target 7 / 255
    result = json.loads((run / "eval.json").read_text())
    assert result["num_pixels"] == 2 * (H - UNLABELLED_ROWS) * W
    assert ckpt.load_meta(ckpt.resolve(run / "checkpoints"))["ignore_index"] == 7
    assert (run / "pictures" / "00_s0.png").is_file()


def test_padding_fills_with_the_ignore_index(sevens):
    mask = make_dataset(_recipe().data, "train", train=True)[0]["mask"]
    assert mask.shape == (96, 96)
    assert set(mask.unique().tolist()) <= {0, 1, 2, 7} and (mask == 7).sum() >= 96 * 96 - 80 * 80


def test_recipe_ignore_index_relabels_the_datasets_own(sevens):
    recipe = _recipe(ignore_index=0)  # e.g. the "left" class left out of loss and metrics
    train = make_dataset(recipe.data, "train", train=True)
    val = make_dataset(recipe.data, "val", train=False)
    assert train.ignore_index == val.ignore_index == 0
    mask = val[0]["mask"]
    assert mask[:UNLABELLED_ROWS].eq(0).all() and set(mask.unique().tolist()) == {0, 1, 2}
    assert set(train[0]["mask"].unique().tolist()) <= {0, 1, 2}  # padding is 0 too
    loss = T.build_criterion(recipe, train, "cpu")
    assert loss.terms["ce"].ignore_index == 0
    assert loss.terms["ce"].weight[0].item() == 1.0  # never counted: the weight of an absent class


def test_pictures_leave_ignored_pixels_unpainted():
    from zoo.data.palettes import colorize
    from zoo.engine.visualize import overlay_panel
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    palette = np.array([[10, 10, 10], [20, 20, 20], [30, 30, 30]], np.uint8)
    assert colorize(mask, palette, ignore_index=0).tolist() == [
        [[255, 255, 255], [20, 20, 20]], [[30, 30, 30], [255, 255, 255]]]
    image = np.full((2, 2, 3), 100, np.uint8)
    truth = overlay_panel(image, mask, mask, palette, ignore_index=0)[:, 2 + 4:2 + 4 + 2]
    assert truth[0, 0].tolist() == [100, 100, 100] and truth[0, 1].tolist() != [100, 100, 100]
