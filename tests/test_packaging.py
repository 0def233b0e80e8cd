"""pyproject's dependencies against what the code imports: every third-party module that
zoo/ and decoders/ import is declared, by the distribution that provides it, with a
lower bound that admits no version the code cannot run on."""
from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"zoo", "decoders"}
# Modules that only some commands import: each belongs in the named extra, not in the base install.
OPTIONAL = {"wandb": "wandb", "onnx": "export", "onnxruntime": "export", "onnxscript": "export"}
# Versions the code cannot run on, and why: each must be excluded by the declared requirement.
TOO_OLD = {"segmentation-models-pytorch": ("0.5.0", "losses pass class_weights=, accepted from smp 0.6")}


def project():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(specs) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def imported_modules() -> dict[str, str]:
    """Top-level third-party module -> one file importing it, from every `import` in zoo/ and decoders/."""
    found = {}
    for top in sorted(FIRST_PARTY):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    module = name.split(".")[0]
                    if module not in sys.stdlib_module_names and module not in FIRST_PARTY:
                        found.setdefault(module, str(path.relative_to(REPO)))
    return found


def test_the_import_scan_sees_imports_inside_functions():
    modules = imported_modules()
    assert {"torch", "timm", "pydantic", "huggingface_hub", "albumentations"} <= set(modules)
    assert modules["huggingface_hub"] in ("zoo/models/encoders.py", "zoo/hub/hf.py")  # imported inside functions


def test_every_direct_import_is_declared():
    meta = project()
    base = requirements(meta["dependencies"])
    extras = {name: requirements(specs) for name, specs in meta["optional-dependencies"].items()}
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(imported_modules().items()):
        if module not in providers:
            missing.append(f"{module} (imported by {where}) is not installed, so no distribution provides it")
            continue
        dists = {canonicalize_name(d) for d in providers[module]}
        if module in OPTIONAL:
            declared = extras.get(OPTIONAL[module], {})
            place = f"the [{OPTIONAL[module]}] extra"
        else:
            declared, place = base, "dependencies"
        if not dists & set(declared):
            missing.append(f"{module} (imported by {where}): add {min(dists)} to {place}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("dist", sorted(TOO_OLD))
def test_declared_lower_bounds_exclude_versions_the_code_cannot_use(dist):
    version, why = TOO_OLD[dist]
    requirement = requirements(project()["dependencies"])[dist]
    assert version not in requirement.specifier, f"{requirement} admits {version}, but {why}"


def test_installed_smp_takes_the_class_weights_the_losses_pass():
    import inspect

    from segmentation_models_pytorch import losses
    for loss in (losses.DiceLoss, losses.FocalLoss):
        assert "class_weights" in inspect.signature(loss).parameters
