"""The recipes that ship with the package, found by name.

The repository keeps them in its top-level `recipes/` folder; a wheel installs
that folder as `zoo/recipes/` (pyproject.toml maps the one onto the other).
`recipe_dir()` finds whichever exists, so a checkout, an editable install and
a wheel install all resolve `segzoo train quickstart` alike.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from zoo.common.names import did_you_mean

SUFFIXES = (".yaml", ".yml")


def recipe_dir() -> Path:
    """The folder of packaged recipes: `zoo/recipes/` in an installed wheel,
    else the checkout's `recipes/` beside the `zoo` package."""
    installed = Path(str(resources.files("zoo"))) / "recipes"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "recipes"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"no packaged recipes: neither {installed} nor {checkout} exists "
                            "(a broken install; reinstall segzoo)")


def packaged_recipes() -> dict[str, Path]:
    """{name: file} of every packaged recipe and ablation file, sorted by name."""
    files = (p for p in recipe_dir().iterdir() if p.suffix in SUFFIXES and p.is_file())
    return {p.stem: p for p in sorted(files)}


def find_recipe(spec: str | Path) -> Path:
    """A recipe file: `spec` itself where that file exists, else the packaged
    recipe named `spec` (`pspnet_voc` or `pspnet_voc.yaml`)."""
    path = Path(spec)
    if path.is_file():
        return path
    name = path.stem if path.suffix in SUFFIXES else path.name
    known = packaged_recipes()
    if path.name == str(spec) and name in known:  # a bare name, not a path
        return known[name]
    hint = did_you_mean(name, known)
    raise FileNotFoundError(f"{spec}: no such recipe file, and no packaged recipe of that name"
                            f"{f'; {hint}' if hint else ''} (`segzoo train --list` lists them)")
