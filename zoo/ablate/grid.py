"""Ablation files: a base recipe times a grid, one ordinary run folder per cell.

An ablation file is YAML with these keys (only `base` is required):

    name: camvid_upsamplers        # default: the file's stem; the wandb group
    base: unet_camvid_cpu.yaml     # a recipe, relative to this file, else to the cwd
    overrides: {train.iters: 300}  # dotted keys set on the base recipe
    grid:                          # each list defaults to the base recipe's value
      architectures: [unet, fcn8s]
      upsamplers: [transposed, unpool, bilinear, pixelshuffle,
                   {name: pixelshuffle, icnr: false}, {name: carafe, up_kernel: 3}]
      encoders: [resnet18]
      seeds: [0, 1]
    arch_overrides:                # dotted keys per architecture (model widths, ...)
      fcn8s: {model.fc_channels: 128}
    report: {num_images: 4, thin_classes: [pole, signsymbol], checkerboard_images: 8,
             latency_runs: 10}

A cell is the base recipe with `overrides`, then its architecture's
`arch_overrides`, then command-line overrides, then `model.name`,
`model.encoder`, `model.upsample` and `train.seed` from the grid, and
`log.group` / `log.name` set to the ablation and cell names (used when
wandb is on). Every cell is built through `recipe_from_dict` when the file is
loaded, so a key one architecture does not take fails before any training.
Cells are named `<arch>-<encoder>-<upsampler>-s<seed>` and train into
`<out>/runs/<cell>/`. An upsampler given with options (a mapping, as
`model.upsample` takes it) sweeps an option as names are swept; its label in
names, tables and plots lists the options: `pixelshuffle-icnr_off`,
`carafe-up_kernel_3`.

Running is resumable: a cell whose `eval.json` exists is finished and skipped;
any other is trained with `resume=True`, which continues a killed cell from
its last checkpoint. With several jobs, cells run side by side as
`python -m zoo.commands.train` subprocesses, one per device slot.
"""
from __future__ import annotations

import copy
import os
import queue
import re
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from zoo.names import did_you_mean
from zoo.recipe import (
    Recipe,
    RecipeError,
    RecipeLoader,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)

GRID_KEYS = ("architectures", "upsamplers", "encoders", "seeds")
TOP_KEYS = ("name", "base", "overrides", "grid", "arch_overrides", "report")


class AblationError(RecipeError):
    """An ablation file that cannot be used; the message names the file and the key."""


@dataclass
class ReportConfig:
    num_images: int = 4             # val images in the qualitative grid
    thin_classes: list = field(default_factory=list)  # class names the zoom centres on
    checkerboard_images: int = 8    # first K val images whose logits are scored
    latency_runs: int = 10          # timed forwards (batch 1) after warm-up


@dataclass(frozen=True)
class Cell:
    name: str
    arch: str
    encoder: str
    upsample: str  # the upsampler's label; its spec (name or mapping) is recipe.model["upsample"]
    seed: int
    recipe: Recipe = field(compare=False, repr=False)
    not_applicable: str = ""  # why this combination cannot be built (e.g. unpool without switches)

    @property
    def config(self) -> str:
        """The cell's name without its seed: what seeds are averaged over."""
        return f"{self.arch}-{_slug(self.encoder)}-{self.upsample}"


@dataclass
class Ablation:
    name: str
    source: Path
    base: Path
    cells: list[Cell]
    report: ReportConfig
    grid: dict


# ----------------------------------------------------------------------------- loading

def _unknown(source, parent: str, key, allowed) -> AblationError:
    path = f"{parent}.{key}" if parent else str(key)
    hint = did_you_mean(key, allowed, n=2, cutoff=0.6, joiner=" or ", quote=True)
    hint = f" ({hint})" if hint else ""
    return AblationError(f"{source}: unknown key '{path}'{hint}; allowed: {', '.join(allowed)}")


def _mapping(source, value, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AblationError(f"{source}: key '{path}': expected a mapping, got {type(value).__name__}")
    return value


def upsampler_label(spec) -> str:
    """A grid upsampler's name in cells, tables and plots: the name, then each
    option as `key_value` (booleans on/off), e.g. `pixelshuffle-icnr_off`."""
    if not isinstance(spec, dict):
        return str(spec)

    def value(v):
        return ("on" if v else "off") if isinstance(v, bool) else _slug(str(v)).strip("_")
    return "-".join([str(spec["name"])] + [f"{k}_{value(v)}" for k, v in spec.items() if k != "name"])


def _upsamplers(source, value, path: str) -> list:
    """Names or mappings with a name and options; distinct by label."""
    if not isinstance(value, list) or not value:
        raise AblationError(f"{source}: key '{path}': expected a non-empty list, got {value!r}")
    for i, v in enumerate(value):
        if not (isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("name"), str))):
            raise AblationError(f"{source}: key '{path}[{i}]': expected an upsampler name or a "
                                f"mapping with a name and options, got {v!r}")
    labels = [upsampler_label(v) for v in value]
    if len(set(labels)) != len(labels):
        raise AblationError(f"{source}: key '{path}': duplicate entries in {labels}")
    return list(value)


def _list_of(source, value, path: str, kind: type) -> list:
    if not isinstance(value, list) or not value:
        raise AblationError(f"{source}: key '{path}': expected a non-empty list, got {value!r}")
    for i, v in enumerate(value):
        if not isinstance(v, kind) or isinstance(v, bool):
            raise AblationError(f"{source}: key '{path}[{i}]': expected {kind.__name__}, got {v!r}")
    if len(set(value)) != len(value):
        raise AblationError(f"{source}: key '{path}': duplicate entries in {value}")
    return list(value)


def set_dotted(raw: dict, key: str, value, where: str = "") -> None:
    """`raw["a"]["b"]["c"] = value` for key "a.b.c", creating mappings on the way."""
    parts = str(key).split(".")
    if not all(parts):
        raise AblationError(f"{where}malformed dotted key {key!r}")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AblationError(f"{where}key {key!r}: '{part}' is not a mapping")
    node[parts[-1]] = copy.deepcopy(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)


def _resolve_base(source: Path, base) -> Path:
    if not isinstance(base, str) or not base:
        raise AblationError(f"{source}: key 'base': required (the path of a recipe file)")
    for candidate in (source.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise AblationError(f"{source}: key 'base': recipe {base!r} not found next to the file "
                        "nor from the current folder")


def _report_config(source, raw: dict) -> ReportConfig:
    allowed = {f.name: f for f in fields(ReportConfig)}
    kwargs = {}
    for key, value in raw.items():
        if key not in allowed:
            raise _unknown(source, "report", key, allowed)
        if key == "thin_classes":
            kwargs[key] = [v.lower() for v in _list_of(source, value, "report.thin_classes", str)] \
                if value else []
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AblationError(f"{source}: key 'report.{key}': expected a positive int, got {value!r}")
        else:
            kwargs[key] = value
    return ReportConfig(**kwargs)


def load_ablation(path: str | Path, overrides=()) -> Ablation:
    """Read and check an ablation file. `overrides` ('key=value' strings) apply
    to every cell's recipe, those starting with `report.` to the report settings."""
    source = Path(path)
    if not source.is_file():
        raise AblationError(f"{source}: ablation file not found")
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=RecipeLoader) or {}
    except yaml.YAMLError as e:
        raise AblationError(f"{source}: invalid YAML: {' '.join(str(e).split())}") from None
    raw = _mapping(source, raw, "<top level>")
    for key in raw:
        if key not in TOP_KEYS:
            raise _unknown(source, "", key, TOP_KEYS)
    base_path = _resolve_base(source, raw.get("base"))
    base = recipe_to_dict(load_recipe(base_path))
    for key, value in _mapping(source, raw.get("overrides"), "overrides").items():
        set_dotted(base, key, value, f"{source}: overrides: ")
    cli = [parse_override(item) for item in overrides]
    report_raw = dict(_mapping(source, raw.get("report"), "report"))
    for key, value in [kv for kv in cli if kv[0].startswith("report.")]:
        report_raw[key.split(".", 1)[1]] = value  # `report.*` overrides set the report settings
    cli = [kv for kv in cli if not kv[0].startswith("report.")]

    grid_raw = _mapping(source, raw.get("grid"), "grid")
    for key in grid_raw:
        if key not in GRID_KEYS:
            raise _unknown(source, "grid", key, GRID_KEYS)
    defaults = {"architectures": [base["model"]["name"]],
                "upsamplers": [base["model"].get("upsample") or "bilinear"],
                "encoders": [base["model"].get("encoder")], "seeds": [base["train"]["seed"]]}
    if "encoders" not in grid_raw and defaults["encoders"] == [None]:
        raise AblationError(f"{source}: key 'grid.encoders': required, as the base recipe "
                            "sets no model.encoder")
    grid = {k: _upsamplers(source, grid_raw.get(k, defaults[k]), f"grid.{k}") if k == "upsamplers" else
            _list_of(source, grid_raw.get(k, defaults[k]), f"grid.{k}", int if k == "seeds" else str)
            for k in GRID_KEYS}
    _check_names(source, grid)

    arch_overrides = _mapping(source, raw.get("arch_overrides"), "arch_overrides")
    for arch, values in arch_overrides.items():
        if arch not in grid["architectures"]:
            raise _unknown(source, "arch_overrides", arch, grid["architectures"])
        _mapping(source, values, f"arch_overrides.{arch}")

    name = raw.get("name", source.stem)
    if not isinstance(name, str) or not name:
        raise AblationError(f"{source}: key 'name': expected a non-empty string, got {name!r}")
    cells = []
    for arch in grid["architectures"]:
        for encoder in grid["encoders"]:
            for upsample in grid["upsamplers"]:
                for seed in grid["seeds"]:
                    cells.append(_make_cell(source, name, base, arch_overrides.get(arch) or {}, cli,
                                            arch, encoder, upsample, seed))
    report = _report_config(source, report_raw)
    return Ablation(name, source, base_path, _mark_not_applicable(cells), report, grid)


def _mark_not_applicable(cells: list[Cell]) -> list[Cell]:
    """Build each distinct model once (no weights) and mark the cells whose
    combination does not exist, such as unpooling on an encoder without
    max-pool switches: the report lists them with the reason, nobody trains them."""
    import dataclasses
    import json

    from zoo.registry import create
    reasons: dict[str, str] = {}
    out = []
    for cell in cells:
        args = {**cell.recipe.model, "encoder_weights": None}
        args["num_classes"] = args.get("num_classes") or 2
        key = json.dumps(args, sort_keys=True, default=str)
        if key not in reasons:
            try:
                create(**args)
                reasons[key] = ""
            except ValueError as e:
                if "switches" not in str(e):
                    raise AblationError(f"cell {cell.name}: {e}") from None
                reasons[key] = str(e)
        out.append(dataclasses.replace(cell, not_applicable=reasons[key]))
    return out


def _check_names(source, grid: dict) -> None:
    from decoders.upsample import check_upsampler
    from zoo.registry import resolve_name
    for i, arch in enumerate(grid["architectures"]):
        try:
            resolve_name(arch)
        except ValueError as e:
            raise AblationError(f"{source}: key 'grid.architectures[{i}]': {e}") from None
    for i, up in enumerate(grid["upsamplers"]):
        try:
            check_upsampler(up)
        except ValueError as e:
            raise AblationError(f"{source}: key 'grid.upsamplers[{i}]': {e}") from None


def _make_cell(source, name, base, arch_values, cli, arch, encoder, upsample, seed) -> Cell:
    label = upsampler_label(upsample)
    cell_name = f"{arch}-{_slug(encoder)}-{label}-s{seed}"
    raw = copy.deepcopy(base)
    for key, value in arch_values.items():
        set_dotted(raw, key, value, f"{source}: arch_overrides.{arch}: ")
    for key, value in cli:
        set_dotted(raw, key, value, "override: ")
    raw["model"].update(name=arch, encoder=encoder, upsample=upsample)
    raw["train"]["seed"] = seed
    raw["log"].update(group=name, name=cell_name)
    try:
        recipe = recipe_from_dict(raw, f"{source} (cell {cell_name})")
    except RecipeError as e:
        hint = "; set architecture-specific keys under arch_overrides.<arch>" \
            if "model." in str(e) else ""
        raise AblationError(f"{e}{hint}") from None
    return Cell(cell_name, arch, encoder, label, seed, recipe)


# ----------------------------------------------------------------------------- running

def run_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / "runs" / cell.name


def is_finished(path: Path) -> bool:
    return (Path(path) / "eval.json").is_file()


def train_cells(ablation: Ablation, out: Path, *, jobs: int = 1, devices=None, log=print) -> list[str]:
    """Train every unfinished cell; returns the names of cells that failed.

    jobs=1 without devices trains in this process, one cell after another.
    Otherwise each cell is a `python -m zoo.commands.train` subprocess; `devices`
    (e.g. ["cuda:0", "cuda:1"]) are handed out round-robin to `jobs` slots.
    """
    todo = []
    for cell in ablation.cells:
        if cell.not_applicable:
            log(f"[ablate] skip {cell.name}: not applicable ({cell.not_applicable})")
        elif is_finished(run_dir(out, cell)):
            log(f"[ablate] skip {cell.name}: finished ({run_dir(out, cell) / 'eval.json'})")
        else:
            todo.append(cell)
    if not todo:
        return []
    # Seed-major: a grid stopped half-way has every configuration once.
    todo.sort(key=lambda c: ablation.grid["seeds"].index(c.seed))
    devices = list(devices or [])
    if devices and jobs == 1:
        jobs = len(devices)  # one job per device unless told otherwise
    if jobs <= 1:
        return _train_here(todo, out, devices[0] if devices else None, log)
    return _train_side_by_side(todo, out, jobs, devices, log)


def _train_here(cells, out, device, log) -> list[str]:
    from zoo.engine.trainer import train
    failed = []
    for i, cell in enumerate(cells, 1):
        path = run_dir(out, cell)
        if is_finished(path):  # finished meanwhile by another runner on the same folder
            continue
        recipe = _with_device(cell.recipe, device) if device else cell.recipe
        log(f"[ablate] train {cell.name} ({i}/{len(cells)}) -> {path}")
        try:
            train(recipe, path, resume=True)
            (path / "error.txt").unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 — one failed cell must not stop the grid
            failed.append(cell.name)
            path.mkdir(parents=True, exist_ok=True)
            (path / "error.txt").write_text(traceback.format_exc())
            log(f"[ablate] FAILED {cell.name}: {type(e).__name__}: {e} (see {path / 'error.txt'})")
    return failed


def train_command(recipe: Path, run_dir: Path) -> list[str]:
    """The subprocess that trains one cell: the installed package's own train
    command, so a grid runs wherever `zoo` imports (no checkout needed)."""
    return [sys.executable, "-m", "zoo.commands.train", str(recipe), "--run-dir", str(run_dir)]


def _train_side_by_side(cells, out, jobs, devices, log) -> list[str]:
    slots: queue.Queue = queue.Queue()  # a device per slot; a job takes one while it runs
    for k in range(jobs):
        slots.put(devices[k % len(devices)] if devices else None)
    threads_each = max(1, (os.cpu_count() or 1) // jobs)

    def work(cell) -> bool:
        device = slots.get()
        try:
            path = run_dir(out, cell)
            if is_finished(path):
                return True
            recipe = _with_device(cell.recipe, device) if device else cell.recipe
            save_recipe(recipe, path / "recipe.yaml")
            cmd = train_command(path / "recipe.yaml", path)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads_each)}
            log(f"[ablate] train {cell.name} on {device or 'the default device'} -> {path}")
            with open(path / "train.log", "a") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            if rc != 0 or not is_finished(path):
                log(f"[ablate] FAILED {cell.name}: exit status {rc} (see {path / 'train.log'})")
                return False
            return True
        finally:
            slots.put(device)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(work, cells))
    return [c.name for c, ok in zip(cells, done) if not ok]


def _with_device(recipe: Recipe, device: str) -> Recipe:
    raw = recipe_to_dict(recipe)
    raw["train"]["device"] = device
    return recipe_from_dict(raw, f"device {device!r}")
