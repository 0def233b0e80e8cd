"""Where a trained model comes from, for every tool and `zoo.predict`.

A source is a run folder (`checkpoints/` + `recipe.yaml`), a checkpoint folder
inside one, a published folder (`model.safetensors` + `config.json`, whose
`recipe` is the run's), its URL, a zoo entry's name, or a model object. The
weights come from `zoo.load`; this module adds the recipe the model was trained
with, which says how to read an image (validation transforms, mean, std) and
how to rebuild its dataset. Where it makes sense (export), a registered
architecture name builds a fresh model with `zoo.create`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from zoo import factory
from zoo.engine.recipe import Recipe, load_recipe, recipe_from_dict
from zoo.hub.formats import check_readable, resolve_run
from zoo.hub.load import ENTRIES, local_path
from zoo.hub.load import load as hub_load


@dataclass
class Source:
    model: nn.Module          # eval mode, on the device asked for
    meta: dict                # classes, palette, mean, std, eval_protocol, metrics, ...
    recipe: Recipe | None     # the training recipe, where the source carries it
    run_dir: Path | None      # the run folder, where the source is one (results are written there)


def load_source(source, *, pointer: str = "best", device="cpu", arch_args: dict | None = None,
                allow_arch: bool = False) -> Source:
    """The model, its metadata and its recipe from any source (see the module docstring).
    `allow_arch` lets a registered architecture name build an untrained model from
    `arch_args`; other sources refuse `arch_args`, as their weights fix the architecture."""
    if isinstance(source, nn.Module):
        return Source(source.to(device).eval(), dict(getattr(source, "meta", {}) or {}), None, None)
    text = os.fspath(source)
    path = local_path(text)
    looks_like_name = "/" not in text and os.sep not in text and not text.endswith(".safetensors")
    if allow_arch and looks_like_name and not (path is not None and path.exists()) and text not in ENTRIES:
        # Not a folder nor an entry: an architecture (unknown names get the closest ones).
        model = factory.create(text, **(arch_args or {}))
        return Source(model.to(device).eval(), {}, None, None)
    if arch_args:
        raise ValueError(f"{text}: model arguments ({', '.join(arch_args)}) apply to an architecture "
                         "name only; a trained model's weights fix its architecture")
    if path is not None and (path / "checkpoints").is_dir():
        # A damaged file is named before any model is built.
        check_readable(resolve_run(path, pointer))
    model = hub_load(text, pointer=pointer, map_location=device)
    recipe, run_dir = None, None
    if path is not None and path.exists():
        recipe, run_dir = _run_recipe(path)
    if recipe is None and run_dir is None and isinstance(model.meta.get("recipe"), dict):
        # a published folder, local, by URL or on the Hub: its config.json carries the recipe
        recipe = _recipe_from(model.meta["recipe"], f"{text} (config.json)")
    elif recipe is None and text in ENTRIES and isinstance(ENTRIES[text].recipe, dict):
        recipe = _recipe_from(ENTRIES[text].recipe, f"entry {text!r}")
    return Source(model, dict(model.meta), recipe, run_dir)


def _run_recipe(path: Path) -> tuple[Recipe | None, Path | None]:
    """(recipe, run folder) of a run folder or one of its checkpoints; (None, None) otherwise."""
    folder = path.parent if path.is_file() else path
    for run_dir in (folder, folder.parent.parent):  # a run, or one of its checkpoints
        if (run_dir / "checkpoints").is_dir():
            recipe_file = run_dir / "recipe.yaml"
            return (load_recipe(recipe_file) if recipe_file.is_file() else None), run_dir
    return None, None


def _recipe_from(d: dict, where: str) -> Recipe:
    return recipe_from_dict(d, f"{where} (recipe)")


def require_recipe(src: Source, source, what: str) -> Recipe:
    if src.recipe is None:
        raise FileNotFoundError(f"{source}: {what} needs the training recipe (a run folder's "
                                "recipe.yaml, or 'recipe' in a published folder's config.json), "
                                "and this source has none")
    return src.recipe
