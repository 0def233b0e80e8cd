"""One way to extend anything: a model, an upsampler, a dataset and a loss registered from
outside the package, each listed and found, each with the same did-you-mean on a typo,
and a recipe that uses all four trained for two iterations."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

import zoo
from decoders.upsample import UPSAMPLERS, Upsampler, make_upsampler, register_upsampler
from zoo.data import DATASETS, SegDataset, build_dataset, dataset_family, register_dataset
from zoo.engine import trainer as T
from zoo.engine.losses import LOSSES, build_loss, register_loss
from zoo.engine.recipe import RecipeError, recipe_from_dict
from zoo.models.registry import MODELS, architectures, register_model

MODEL, UPSAMPLER, DATASET, LOSS = "ext_tiny_unet", "ext_doubling", "ext_stripes", "ext_smooth_ce"


class Doubling(Upsampler):
    """Nearest resize, then a 1x1 projection: the simplest upsampler that learns."""

    def __init__(self, in_channels, out_channels, scale, head_convolves: bool = False):
        super().__init__(in_channels, out_channels, scale)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x, guide=None, indices=None, output_size=None):
        y = F.interpolate(self.proj(x), scale_factor=self.scale, mode="nearest")
        h, w = self.target(x, output_size)
        return y[..., :h, :w]


class Stripes(SegDataset):
    """Four in-memory images of three vertical bands, one class each."""

    classes = ("left", "middle", "right")
    palette = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)

    def __init__(self, root=None, split: str = "train", transform=None, *, num_images: int = 4):
        super().__init__(root, split, transform)
        self.num_images = num_images

    def __len__(self):
        return self.num_images

    def load(self, i):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 11:22], mask[:, 22:] = 1, 2
        noise = np.random.default_rng(i).integers(0, 40, (32, 32, 3))
        return (self.palette[mask] * 0.8 + noise).astype(np.uint8), mask, f"{self.split}_{i}"


def tiny_unet(num_classes: int = 3, upsample="bilinear", encoder_weights: str | None = None):
    """A U-Net on the test encoder with narrow decoder widths."""
    return MODELS.get("unet")(encoder="test_resnet", num_classes=num_classes, upsample=upsample,
                              encoder_weights=encoder_weights, decoder_channels=(16, 16, 8, 8, 8))


def smooth_ce(ignore_index, weights):
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index, label_smoothing=0.1)


@pytest.fixture
def extended():
    register_model(tiny_unet, name=MODEL, tiny={})
    register_upsampler(UPSAMPLER, Doubling)
    register_dataset(DATASET, Stripes, family="synthetic")  # flips only: its colours are its labels
    register_loss(LOSS, smooth_ce)
    yield
    MODELS.unregister(MODEL)
    UPSAMPLERS.unregister(UPSAMPLER)
    DATASETS.unregister(DATASET)
    LOSSES.unregister(LOSS)


def test_each_kind_is_listed_and_found(extended):
    assert MODEL in zoo.list_models("ext_*") and MODEL in architectures(presets=False)
    assert MODELS.info(MODEL)["tiny"] == {}
    assert isinstance(make_upsampler(UPSAMPLER, 4, 2, 2), Doubling) and UPSAMPLER in list(UPSAMPLERS)
    assert DATASETS.get(DATASET) is Stripes and dataset_family(DATASET) == "synthetic"
    assert len(build_dataset(DATASET, None, "val", num_images=2)) == 2
    assert LOSS in LOSSES.names() and set(build_loss(f"ce+{LOSS}", num_classes=3).terms) == {"ce", LOSS}
    model = zoo.create(MODEL, upsample=UPSAMPLER, num_classes=3)
    assert model.config == {"name": MODEL, "upsample": UPSAMPLER, "num_classes": 3}
    assert {r["method"] for r in model.upsampling()} == {UPSAMPLER}


def test_a_taken_name_is_refused(extended):
    for register, name, obj in ((register_upsampler, UPSAMPLER, Doubling), (register_dataset, DATASET, Stripes),
                                (register_loss, LOSS, smooth_ce)):
        with pytest.raises(ValueError, match=f"'{name}' is already registered"):
            register(name, obj)
    with pytest.raises(ValueError, match=f"model '{MODEL}' is already registered"):
        register_model(tiny_unet, name=MODEL, tiny={})
    with pytest.raises(TypeError, match="expected a SegDataset subclass"):
        register_dataset("ext_not_a_dataset", dict)


def test_each_kind_suggests_on_a_typo(extended):
    with pytest.raises(ValueError, match=f"unknown model 'ext_tiny_unett'; did you mean {MODEL}"):
        zoo.create("ext_tiny_unett")
    with pytest.raises(ValueError, match=f"unknown upsampler 'ext_doublin'; did you mean {UPSAMPLER}"):
        make_upsampler("ext_doublin", 4, 2, 2)
    with pytest.raises(ValueError, match=f"unknown dataset 'ext_stripe'; did you mean {DATASET}"):
        build_dataset("ext_stripe", None, "train")
    with pytest.raises(ValueError, match=f"unknown loss 'ext_smooth_c'; did you mean {LOSS}"):
        build_loss("ext_smooth_c", num_classes=3)
    with pytest.raises(RecipeError, match=f"key 'model.name': unknown model 'ext_tiny_unt'; did you mean {MODEL}"):
        recipe_from_dict({"model": {"name": "ext_tiny_unt"}})


@pytest.mark.train
def test_a_recipe_trains_with_all_four(extended, tmp_path):
    recipe = recipe_from_dict({
        "model": {"name": MODEL, "upsample": UPSAMPLER},
        "data": {"dataset": DATASET, "batch_size": 2, "num_workers": 0, "crop_size": [32, 32]},
        "train": {"iters": 2, "checkpoint_interval": 2, "loss": f"{LOSS}+dice"},
        "eval": {"interval": 2, "max_images": 2}, "log": {"num_images": 1}})
    run = tmp_path / "run"
    T.train(recipe, run)
    result = json.loads((run / "eval.json").read_text())
    assert len(result["per_class_iou"]) == 3
    model = zoo.load(run)
    assert model.config["name"] == MODEL and model.config["upsample"] == UPSAMPLER
    assert {r["method"] for r in model.upsampling()} == {UPSAMPLER}


def test_unregistered_after_the_fixture():
    assert MODEL not in MODELS and UPSAMPLER not in UPSAMPLERS and DATASET not in DATASETS and LOSS not in LOSSES
