"""Every shipped recipe is valid, builds its model, and names its dataset layout."""
from pathlib import Path

import pytest

import zoo
from zoo.recipe import load_recipe

RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")
                 if not p.name.startswith("ablation"))


def test_the_issue_named_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "pspnet_voc", "pspnet_cityscapes", "fcn8s_voc", "unet_cityscapes",
            "deconvnet_voc", "fcn8s_camvid", "unet_camvid", "deconvnet_camvid",
            "pspnet_camvid"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_builds(path):
    recipe = load_recipe(path, ["model.encoder_weights=null"])
    start = recipe.model.get("pretrained")
    if isinstance(start, str) and "/" in start:
        # A second stage: it starts from its first stage's default run folder, whose model it is.
        first = path.with_name(Path(start).name + ".yaml")
        assert start == f"runs/{first.stem}" and first.is_file(), start
        assert {k: v for k, v in recipe.model.items() if k != "pretrained"} == load_recipe(first).model
        recipe = load_recipe(path, ["model.encoder_weights=null", "model.pretrained=null"])
    model = zoo.create(**recipe.model)
    assert model.config["name"] == recipe.model["name"]
    if recipe.model["name"] == "pspnet":
        assert recipe.train.aux_weight == 0.4 and model.aux_head is not None


def test_real_recipes_use_imagenet_encoders():
    """Full-protocol recipes start from ImageNet; the CPU ones (quickstart, the reduced CamVid
    run and the zoo entries' recipes, *_resnet10t_camvid) train from scratch, as they say."""
    for path in RECIPES:
        recipe = load_recipe(path)
        from_scratch = path.stem in ("quickstart", "unet_camvid_cpu") or "_resnet10t_camvid" in path.stem
        expected = None if from_scratch else "imagenet"
        assert recipe.model.get("encoder_weights") == expected, path.name
