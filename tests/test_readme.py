"""The README's examples against the code, so they cannot drift: results shown in
comments, commands, packaged recipes and zoo entries it names."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import zoo
from zoo.commands import COMMANDS, usage
from zoo.engine.packaged import packaged_recipes

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TOOL_COMMANDS = {"list_models": "list"}  # tools/<file>.py -> segzoo command, where they differ


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def shown_results() -> list[tuple[str, object]]:
    """(expression, value) for each Python line `expression  # <a Python literal>`."""
    found = []
    for block in code_blocks("python"):
        for line in block.splitlines():
            code, _, comment = line.partition("#")
            try:
                ast.parse(code.strip(), mode="eval")
                value = ast.literal_eval(comment.strip())
            except (SyntaxError, ValueError):
                continue  # a statement, or a comment in words
            found.append((code.strip(), value))
    return found


def test_the_readme_shows_results_to_check():
    assert ('zoo.list_models("fcn*")' in dict(shown_results()))


@pytest.mark.parametrize("expression, shown", shown_results(), ids=lambda x: x if isinstance(x, str) else "")
def test_readme_expressions_give_the_results_their_comments_show(expression, shown):
    # Expressions over the public API only (the lines selected above are pure expressions).
    assert eval(expression, {"zoo": zoo}) == shown


def test_every_command_the_readme_names_exists():
    named = set(re.findall(r"\bsegzoo (?!--)([a-z_]+)", README))
    tools = set(re.findall(r"\btools/([a-z_]+)\.py", README))
    assert named and tools
    for tool in tools:
        assert (REPO / "tools" / f"{tool}.py").is_file(), f"README names tools/{tool}.py, which does not exist"
    help_text = usage()
    for command in named | {TOOL_COMMANDS.get(t, t) for t in tools}:
        assert re.search(rf"^  {command} ", help_text, flags=re.MULTILINE), f"README names `segzoo {command}`, " \
            "which `segzoo --help` does not list"


def test_the_readme_lists_every_command():
    listed = re.search(r"`segzoo --help` the commands \(([^)]*)\)", README)
    assert listed, "README's sentence listing the commands is gone"
    assert re.findall(r"`([a-z]+)`", listed[1]) == list(COMMANDS)


def test_every_recipe_the_readme_names_is_packaged():
    recipes = packaged_recipes()
    named = set(re.findall(r"\brecipes/([a-z0-9_]+)\.yaml", README))
    named |= set(re.findall(r"(?:segzoo |tools/)(?:train|ablate)(?:\.py)? ([a-z][a-z0-9_]*)(?=[\s`])", README))
    named |= {name for name in re.findall(r"`([a-z0-9_]+)`", README) if name.endswith("_cpu")}
    assert named and not named - set(recipes), f"not packaged: {sorted(named - set(recipes))}"


def test_the_readme_names_every_cpu_sized_recipe():
    cpu = {name for name in packaged_recipes() if name.endswith("_cpu") or "_resnet10t_camvid" in name}
    missing = sorted(name for name in cpu if f"`{name}`" not in README)
    assert not missing, f"README never names these CPU-sized recipes: {missing}"


def test_every_entry_the_readme_uses_is_registered():
    uses = [r'zoo\.create\("([a-z0-9_]+)", pretrained=True',     # an entry's weights
            r'zoo\.load\("([a-z0-9_]+)"',                         # a bare name, not a path
            r"\bsegzoo (?:predict|eval) ([a-z][a-z0-9_]*) ",
            r"--model ([a-z][a-z0-9_]*_camvid)\b",
            r"model\.pretrained: ([a-z][a-z0-9_]*)`",
            r"^\| `([a-z0-9_]+_camvid)` \|"]                     # a table of entries
    named = {name for pattern in uses for name in re.findall(pattern, README, flags=re.MULTILINE)}
    entries = set(zoo.hub.load.ENTRIES)
    assert named and not named - entries, f"no such entry: {sorted(named - entries)}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_examples_name_commands_recipes_and_entries_that_exist(command):
    """`segzoo <command> --help` shows its module docstring: its examples must run as written."""
    import importlib
    doc = importlib.import_module(f"zoo.commands.{COMMANDS[command][0]}").__doc__ or ""
    commands = set(re.findall(r"\bsegzoo (?!--)([a-z_]+)", doc))
    assert not commands - set(COMMANDS), f"no such command: {sorted(commands - set(COMMANDS))}"
    recipes = set(re.findall(r"\bsegzoo (?:train|ablate) ([a-z][a-z0-9_]*)(?=\s)", doc))
    assert not recipes - set(packaged_recipes()), f"not packaged: {sorted(recipes - set(packaged_recipes()))}"
    entries = set(re.findall(r"\bsegzoo (?:predict|eval) ([a-z][a-z0-9_]*)\s", doc))
    entries |= set(re.findall(r"--model ([a-z][a-z0-9_]*_camvid)\b", doc))
    assert not entries - set(zoo.hub.load.ENTRIES), f"no such entry: {sorted(entries - set(zoo.hub.load.ENTRIES))}"
