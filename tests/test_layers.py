"""Arrows run one way: tools -> engine -> hub -> registry -> models -> encoders/decoders.
A module that imports a layer above its own fails here, naming the import."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HUB_LAYER = ("zoo.hub", "zoo.hf", "zoo.ship", "zoo.publish", "zoo.card", "zoo.engine", "zoo.ablate", "tools")
BELOW_HUB = ["zoo/registry.py", "zoo/names.py",
             *sorted(str(p.relative_to(REPO)) for p in (REPO / "zoo" / "models").glob("*.py")),
             "zoo/encoders.py", *sorted(str(p.relative_to(REPO)) for p in (REPO / "decoders").glob("*.py"))]


def imports(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("module", BELOW_HUB)
def test_no_import_upwards(module):
    upward = [m for m in imports(REPO / module) if m.startswith(HUB_LAYER)]
    assert not upward, f"{module} imports {upward[0]}, a layer above it"


HUB_MODULES = ["zoo/hub.py", "zoo/entries.py", "zoo/hf.py", "zoo/download.py", "zoo/runfolder.py"]


@pytest.mark.parametrize("module", HUB_MODULES)
def test_the_hub_does_not_call_back_into_the_engine(module):
    """The run folder's layout lives in zoo/runfolder.py, below the hub: reading a run
    needs nothing from the engine that wrote it."""
    upward = [m for m in imports(REPO / module)
              if m.startswith(("zoo.engine", "zoo.ablate", "zoo.commands", "tools"))]
    assert not upward, f"{module} imports {upward[0]}, a layer above it"


def test_the_check_sees_a_lazy_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from zoo import hub\n    import zoo.engine.trainer\n")
    assert [m for m in imports(bad) if m.startswith(HUB_LAYER)] == ["zoo.hub", "zoo.engine.trainer"]
