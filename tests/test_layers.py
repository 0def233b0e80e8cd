"""The package's layers, checked by package: imports run downwards only, no two modules
import each other (even through a chain, even lazily), and no module grows past 400 lines.

Layers, top to bottom; a package may import only the layers below its own (and itself):

    tools/, zoo.commands, zoo.__main__     the command line
    zoo.lab                                benchmarks, parity, ablation, shipping, card, publish
    zoo.inference                          predict, score, export, deploy, quantize
    zoo.engine                             training, evaluation, recipes, sources
    zoo  (zoo/__init__.py)                 the public surface: create, list_models, load, ...
    zoo.hub, zoo.factory                   trained weights, formats, downloads; zoo.create
    zoo.models                             registry, encoders, architectures
    decoders                               heads, upsamplers            (imports zoo.common only)
    zoo.data                               datasets, transforms         (imports zoo.common only)
    zoo.common                             names, fileio, registry, machine facts

The surface re-exports zoo.create and zoo.load from the hub layer, so it sits just above
it: the engine and the layers above may `import zoo`; the hub and below may not (there,
`import zoo` reaches back up through everything the surface re-exports).

Every module under zoo/ and decoders/ is read with `ast`, not imported: imports at module
level and inside functions both count, relative imports are resolved, and so is
`importlib.import_module("literal")`. `from zoo.hub import load` names the module zoo.hub.load;
`from zoo import create` names the surface `zoo`. The parent packages Python runs on the
way to a module (zoo/__init__.py before zoo.hub.load) are not counted as imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400

# Top to bottom. A module belongs to the first layer one of whose prefixes it equals or
# starts with (prefix + "."); "zoo" alone is the surface, zoo/__init__.py.
LAYERS = [
    ("command line", ("tools", "zoo.commands", "zoo.__main__")),
    ("lab", ("zoo.lab",)),
    ("inference", ("zoo.inference",)),
    ("engine", ("zoo.engine",)),
    ("surface", ("zoo",)),  # exact: only zoo/__init__.py
    ("hub", ("zoo.hub", "zoo.factory")),
    ("models", ("zoo.models",)),
    ("decoders", ("decoders",)),
    ("data", ("zoo.data",)),
    ("common", ("zoo.common",)),
]
RANK = {name: len(LAYERS) - i for i, (name, _) in enumerate(LAYERS)}
# Layers that may import fewer than everything below them.
ONLY = {"decoders": {"decoders", "common"}, "data": {"data", "common"}}

# (importing file, imported layer, inside functions only, why). Each one is an import the
# design wants; an entry that no longer matches any import fails test_every_exception_is_used.
EXCEPTIONS = [
    ("zoo/__init__.py", "inference", True,
     "zoo.predict and zoo.Predictor are the surface's conveniences; imported on first call "
     "so that `import zoo` does not load the inference stack"),
]


def layer_of(module: str) -> str | None:
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or (prefix != "zoo" and module.startswith(prefix + ".")):
                return name
    return None


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for top in ("zoo", "decoders") for p in sorted((REPO / top).rglob("*.py"))}


def resolve(name: str, known) -> str:
    """The module `name` means: itself if it is a module, else the longest module prefix
    (`zoo.hub.load.load`, the function, is the module zoo.hub.load)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return name


def imports(path: Path, name: str, known=MODULES) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for each zoo.*, decoders.* and tools.*
    module `path` imports, at any depth."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []

    def add(node, target, lazy):
        entry = (node.lineno, resolve(target, known), lazy)
        if target.split(".")[0] in ("zoo", "decoders", "tools") and entry not in found:
            found.append(entry)

    def visit(node, lazy):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module
            for alias in node.names:
                sub = f"{base_name}.{alias.name}"
                add(node, sub if sub in known else base_name, lazy)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            add(node, node.args[0].value, lazy)
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


IMPORTS = {name: imports(path, name) for name, path in MODULES.items()}


def where(module: str, line: int | None = None, modules=MODULES) -> str:
    path = modules[module].relative_to(REPO).as_posix() if module in modules else module
    return f"{path}:{line}" if line else path


def upward_imports(modules=MODULES, found=IMPORTS, exceptions=EXCEPTIONS):
    """(offenders, the exceptions that matched): each offender is 'file:line imports X (a -> b)'."""
    offenders, used = [], set()
    for module, edges in found.items():
        here = layer_of(module)
        rel = where(module, modules=modules)
        for line, target, lazy in edges:
            there = layer_of(target)
            if here is None or there is None:
                offenders.append(f"{where(module, line, modules)} imports {target}: "
                                 f"{module if here is None else target} is in no layer")
                continue
            allowed = there in ONLY[here] if here in ONLY else RANK[there] <= RANK[here]
            if allowed:
                continue
            match = [i for i, (file, layer, lazy_only, _) in enumerate(exceptions)
                     if file == rel and layer == there and (lazy or not lazy_only)]
            if match:
                used.update(match)
                continue
            offenders.append(f"{where(module, line, modules)} imports {target}{' (in a function)' if lazy else ''}: "
                             f"{here} -> {there}")
    return offenders, used


def test_every_module_is_in_a_layer():
    assert MODULES, "no modules found"
    assert [where(m) for m in MODULES if layer_of(m) is None] == []


def test_no_import_goes_up_a_layer():
    offenders, _ = upward_imports()
    assert not offenders, f"{len(offenders)} imports go up a layer:\n" + "\n".join(offenders)


def test_every_exception_is_used():
    _, used = upward_imports()
    stale = [f"{file} -> {layer}" for i, (file, layer, _, _) in enumerate(EXCEPTIONS) if i not in used]
    assert not stale, f"exceptions that match no import any more (remove them): {stale}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def import_graph(found=IMPORTS, modules=MODULES) -> dict[str, set[str]]:
    return {m: {t for _, t, _ in edges if t in modules and t != m} for m, edges in found.items()}


def shortest_circle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest path start -> ... -> start (breadth first), [] if there is none."""
    came_from, frontier = {}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return []


def test_no_import_circle():
    graph = import_graph()
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    lines = []
    for circle in circles:
        lines.append(f"{len(circle)} modules import each other: " + ", ".join(circle))
        shown = set()
        for module in circle:  # the shortest circle through each member, each circle once
            path = shortest_circle(graph, module)
            key = frozenset(zip(path, path[1:]))
            if key in shown:
                continue
            shown.add(key)
            steps = [f"{a} -> {b} ({where(a, next(n for n, t, _ in IMPORTS[a] if t == b))})"
                     for a, b in zip(path, path[1:])]
            lines.append("    " + "; ".join(steps))
    assert not circles, f"{len(circles)} import circles:\n" + "\n".join(lines)


def test_no_module_is_over_400_lines():
    long = {where(m): n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# The checker's own checks, on made-up files.

def test_the_check_sees_lazy_relative_and_dynamic_imports(tmp_path):
    pkg = tmp_path / "zoo" / "models"
    pkg.mkdir(parents=True)
    bad = pkg / "bad.py"
    bad.write_text("import importlib\n"
                   "from . import registry\n"
                   "from ..hub.load import load\n"
                   "def f():\n"
                   "    from zoo import hub, create\n"
                   "    import zoo.engine.trainer\n"
                   "    importlib.import_module('zoo.lab.bench')\n")
    known = {"zoo", "zoo.models", "zoo.models.registry", "zoo.hub", "zoo.hub.load", "zoo.engine",
             "zoo.engine.trainer", "zoo.lab", "zoo.lab.bench"}
    assert module_name(bad, tmp_path) == "zoo.models.bad"
    assert imports(bad, "zoo.models.bad", known) == [
        (2, "zoo.models.registry", False), (3, "zoo.hub.load", False), (5, "zoo.hub", True),
        (5, "zoo", True), (6, "zoo.engine.trainer", True), (7, "zoo.lab.bench", True)]
    init = pkg / "__init__.py"
    init.write_text("from .registry import create\nfrom .. import hub\n")
    assert imports(init, "zoo.models", known) == [(1, "zoo.models.registry", False), (2, "zoo.hub", False)]


def test_the_check_names_upward_imports_and_honours_exceptions():
    found = {"zoo.models.unet": [(3, "zoo.hub.load", True), (4, "zoo.common.names", False)],
             "decoders.heads": [(5, "zoo.data.base", False)],
             "zoo": [(9, "zoo.inference.predict", True), (2, "zoo.lab.bench", False)]}
    offenders, used = upward_imports(modules={}, found=found,
                                      exceptions=[("zoo", "inference", True, "a reason")])
    assert offenders == ["zoo.models.unet:3 imports zoo.hub.load (in a function): models -> hub",
                         "decoders.heads:5 imports zoo.data.base: decoders -> data",
                         "zoo:2 imports zoo.lab.bench: surface -> lab"]
    assert used == {0}


@pytest.mark.parametrize("graph, circles", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}}, [["a", "b"], ["c", "d"]]),
])
def test_the_circle_finder(graph, circles):
    assert sorted(c for c in strongly_connected(graph) if len(c) > 1) == circles
    for circle in circles:
        path = shortest_circle(graph, circle[0])
        assert path[0] == path[-1] == circle[0] and set(path) == set(circle)
    assert shortest_circle(graph, "zz") == []
