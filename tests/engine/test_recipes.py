"""Every shipped recipe is valid, builds its model, and names its dataset layout."""
from pathlib import Path

import pytest
import yaml

import zoo
from zoo.engine.recipe import RecipeError, load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes"
RECIPES = sorted(p for p in RECIPE_DIR.glob("*.yaml")
                 if not p.name.startswith("ablation"))


def test_the_issue_named_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "pspnet_voc", "pspnet_cityscapes", "fcn8s_voc", "unet_cityscapes",
            "deconvnet_voc", "fcn8s_camvid", "unet_camvid", "deconvnet_camvid",
            "pspnet_camvid"} <= names


@pytest.mark.train
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_builds(path):
    recipe = load_recipe(path, ["model.encoder_weights=null"])
    start = recipe.model.get("pretrained")
    if isinstance(start, str) and "/" in start:
        # A later stage: it starts from the previous stage's default run folder, whose model it is
        # (that stage may itself start from an earlier one).
        first = path.with_name(Path(start).name + ".yaml")
        assert start == f"runs/{first.stem}" and first.is_file(), start
        def arch(model):
            return {k: v for k, v in model.items() if k != "pretrained"}
        assert arch(recipe.model) == arch(load_recipe(first).model)
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


def test_crop_size_is_refused_beside_a_packaged_recipes_own_transforms():
    """The CamVid recipes list their train transforms; a crop_size override would do nothing."""
    with pytest.raises(RecipeError, match=r"data.crop_size \(\[176, 240\]\) has no effect when "
                                          r"data.train_transforms is set"):
        load_recipe(RECIPE_DIR / "unet_resnet10t_camvid.yaml", ["data.crop_size=[176, 240]"])
    r = load_recipe(RECIPE_DIR / "unet_resnet10t_camvid.yaml", ["data.crop_size=null"])
    assert r.data.crop_size is None and r.data.train_transforms


# Paths of this project's development machines, which mean nothing where the package is installed.
DEV_PATHS = ("../shared", "shared/data", "/work/")


def test_nothing_that_ships_names_a_path_of_the_development_setup():
    repo = RECIPE_DIR.parent
    shipped = [*sorted(RECIPE_DIR.glob("*.yaml")), repo / "zoo" / "weights" / "index.json", repo / "README.md",
               *sorted((repo / "zoo").rglob("*.py")), *sorted((repo / "decoders").rglob("*.py"))]
    found = [f"{p.relative_to(repo)}:{n}: {line.strip()}" for p in shipped
             for n, line in enumerate(p.read_text().splitlines(), 1) if any(d in line for d in DEV_PATHS)]
    assert not found, "\n".join(found)


def _camvid_recipes() -> dict[str, dict]:
    """name -> recipe (as data) of every packaged CamVid recipe and every entry's recipe."""
    found = {p.stem: yaml.safe_load(p.read_text()) for p in RECIPES}
    found.update((f"entry {name}", entry.recipe) for name, entry in zoo.hub.load.ENTRIES.items())
    return {name: r for name, r in found.items() if r.get("data", {}).get("dataset") == "camvid"}


@pytest.mark.parametrize("name", sorted(_camvid_recipes()))
def test_camvid_roots_resolve_through_zoo_data(name, tmp_path, monkeypatch):
    """Every packaged CamVid recipe and entry recipe finds $ZOO_DATA/camvid, from any folder."""
    from zoo.data.base import resolve_root
    from zoo.engine.recipe import recipe_from_dict
    recipe = recipe_from_dict(_camvid_recipes()[name], name)
    (tmp_path / "datasets" / "camvid").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "datasets"))
    assert resolve_root(recipe.data.root) == tmp_path / "datasets" / "camvid"
