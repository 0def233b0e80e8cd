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
             latency_runs: 10,
             reference: bilinear,        # what each upsampler is compared with, seed by seed
             target_half_width: 0.015}   # the interval the report sizes the seed count for

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

Running is resumable: a cell whose `eval.json` exists, from a run of the cell's recipe as
it now reads, is finished and skipped;
any other is trained with `resume=True`, which continues a killed cell from
its last checkpoint. With several jobs, cells run side by side as
`python -m zoo.commands.train` subprocesses, one per device slot.
"""
from __future__ import annotations

import copy
import fnmatch
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from zoo.engine.recipe import (
    Recipe,
    RecipeError,
    RecipeLoader,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from zoo.engine.recipe_errors import describe, one_line, pydantic_error, unknown_key
from zoo.engine.resume import first_difference
from zoo.engine.trainer import train
from zoo.lab.ablate.schema import AblationError, AblationFile, Grid, ReportConfig, slug, upsampler_label
from zoo.models.registry import create


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
        return f"{self.arch}-{slug(self.encoder)}-{self.upsample}"


@dataclass
class Ablation:
    name: str
    source: Path
    base: Path
    cells: list[Cell]
    report: ReportConfig
    grid: dict


# ----------------------------------------------------------------------------- loading

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


def _resolve_base(source: Path, base: str) -> Path:
    for candidate in (source.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise AblationError(f"{source}: key 'base': recipe {base!r} not found next to the file "
                        "nor from the current folder")


def _read(source: Path, report_overrides: dict) -> AblationFile:
    if not source.is_file():
        raise AblationError(f"{source}: ablation file not found")
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=RecipeLoader) or {}
    except yaml.YAMLError as e:
        raise AblationError(f"{source}: invalid YAML: {one_line(e)}") from None
    if not isinstance(raw, dict):
        raise AblationError(f"{source}: expected a mapping of keys, got {describe(raw)}")
    if report_overrides and isinstance(raw.get("report") or {}, dict):
        raw = {**raw, "report": {**(raw.get("report") or {}), **report_overrides}}
    try:
        return AblationFile.model_validate(raw)
    except ValidationError as e:
        # The top-level keys of an ablation file are keys, not a recipe's sections.
        message = str(pydantic_error(e, AblationFile)).replace("unknown section '", "unknown key '", 1)
        named = next((k for k in report_overrides if f"'report.{k}'" in message), None)
        where = f"--override report.{named}" if named else str(source)  # the value's own place
        raise AblationError(f"{where}: {message}") from None


def load_ablation(path: str | Path, overrides=()) -> Ablation:
    """Read and check an ablation file. `overrides` ('key=value' strings) apply
    to every cell's recipe, those starting with `report.` to the report settings."""
    source = Path(path)
    cli = [parse_override(item) for item in overrides]
    spec = _read(source, {k.split(".", 1)[1]: v for k, v in cli if k.startswith("report.")})
    cli = [kv for kv in cli if not kv[0].startswith("report.")]
    base_path = _resolve_base(source, spec.base)
    base = recipe_to_dict(load_recipe(base_path))
    for key, value in spec.overrides.items():
        set_dotted(base, key, value, f"{source}: overrides: ")

    defaults = {"architectures": [base["model"]["name"]],
                "upsamplers": [base["model"].get("upsample") or "bilinear"],
                "encoders": [base["model"].get("encoder")], "seeds": [base["train"]["seed"]]}
    if spec.grid.encoders is None and defaults["encoders"] == [None]:
        raise AblationError(f"{source}: key 'grid.encoders': required, as the base recipe "
                            "sets no model.encoder")
    grid = {k: list(getattr(spec.grid, k) or defaults[k]) for k in Grid.model_fields}
    for arch in spec.arch_overrides:
        if arch not in grid["architectures"]:
            raise AblationError(f"{source}: {unknown_key('arch_overrides', arch, grid['architectures'])}")

    labels = [upsampler_label(u) for u in grid["upsamplers"]]
    if "reference" in spec.report.model_fields_set and spec.report.reference_label not in labels:
        raise AblationError(f"{source}: key 'report.reference': {spec.report.reference_label!r} is not "
                            f"among the grid's upsamplers ({', '.join(labels)})")
    name = spec.name or source.stem
    cells = [_make_cell(source, name, base, spec.arch_overrides.get(arch) or {}, cli, arch, encoder, up, seed)
             for arch in grid["architectures"] for encoder in grid["encoders"]
             for up in grid["upsamplers"] for seed in grid["seeds"]]
    return Ablation(name, source, base_path, _mark_not_applicable(cells), spec.report, grid)


def _mark_not_applicable(cells: list[Cell]) -> list[Cell]:
    """Build each distinct model once (no weights) and mark the cells whose
    combination does not exist, such as unpooling on an encoder without
    max-pool switches: the report lists them with the reason, nobody trains them."""
    import dataclasses
    import json

    reasons: dict[str, str] = {}
    out = []
    for cell in cells:
        args = {**cell.recipe.model, "encoder_weights": None}
        args["num_classes"] = args.get("num_classes") or 2
        key = json.dumps(args, sort_keys=True, default=str)
        if key not in reasons:
            try:
                _build_once(create, args)
                reasons[key] = ""
            except ValueError as e:
                if "switches" not in str(e):
                    raise AblationError(f"cell {cell.name}: {e}") from None
                reasons[key] = str(e)
        out.append(dataclasses.replace(cell, not_applicable=reasons[key]))
    return out


def _build_once(create, args: dict) -> None:
    """Build a model to see that it exists: on the meta device (no memory, no
    initialisation: seconds for a grid of wide heads), or for real where something
    in its construction needs real tensors."""
    import torch
    try:
        with torch.device("meta"):
            create(**args)
        return
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 — a construction step meta tensors do not support
        pass
    create(**args)


def _make_cell(source, name, base, arch_values, cli, arch, encoder, upsample, seed) -> Cell:
    label = upsampler_label(upsample)
    cell_name = f"{arch}-{slug(encoder)}-{label}-s{seed}"
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


def is_finished(path: Path, recipe: Recipe | None = None) -> bool:
    """Its eval.json exists and, given the cell's `recipe`, the run trained that recipe: a cell
    of an edited ablation file is not finished (it resumes, or names the key it cannot follow)."""
    return (Path(path) / "eval.json").is_file() and (recipe is None or not first_difference(recipe, path))


def train_cells(ablation: Ablation, out: Path, *, jobs: int = 1, devices=None, only=(), log=print) -> list[str]:
    """Train every unfinished cell; returns the names of cells that failed.

    jobs=1 without devices trains in this process, one cell after another.
    Otherwise each cell is a `python -m zoo.commands.train` subprocess; `devices`
    (e.g. ["cuda:0", "cuda:1"]) are handed out round-robin to `jobs` slots.
    `only` (shell patterns of cell names, e.g. "unet-*-s[01]") trains a slice of
    the grid, a pilot say; the same run folders serve the whole grid later.
    """
    todo = []
    for cell in ablation.cells:
        if cell.not_applicable:
            log(f"[ablate] skip {cell.name}: not applicable ({cell.not_applicable})")
        elif not (run_dir(out, cell) / "eval.json").is_file():
            todo.append(cell)
        elif differs := first_difference(cell.recipe, run_dir(out, cell)):
            log(f"[ablate] {cell.name} finished under another recipe ({differs}): resuming it")
            todo.append(cell)
        else:
            log(f"[ablate] skip {cell.name}: finished ({run_dir(out, cell) / 'eval.json'})")
    if only:
        wanted = [c for c in todo if any(fnmatch.fnmatchcase(c.name, p) for p in only)]
        if not wanted and not any(fnmatch.fnmatchcase(c.name, p) for c in ablation.cells for p in only):
            raise AblationError(f"--only {' '.join(only)}: no cell of {ablation.name} matches "
                                f"(cells are named like {ablation.cells[0].name})")
        log(f"[ablate] --only: {len(wanted)} of the {len(todo)} unfinished cells; the others wait")
        todo = wanted
    if not todo:
        return []
    # Seed-major: a grid stopped half-way has every configuration once.
    todo.sort(key=lambda c: ablation.grid["seeds"].index(c.seed))
    devices = list(devices or [])
    if devices and jobs == 1:
        jobs = len(devices)  # one job per device unless told otherwise
    progress = Progress(len(todo), max(1, jobs), log)
    if jobs <= 1:
        return _train_here(todo, out, devices[0] if devices else None, progress, log)
    return _train_side_by_side(todo, out, jobs, devices, progress, log)


class Progress:
    """One line per finished cell: how many are left, the mean wall time of a cell
    trained by this command, and the grid's ETA with `jobs` cells side by side."""

    def __init__(self, total: int, jobs: int, log=print, clock=time.monotonic):
        self.total, self.jobs, self.log, self.clock = total, jobs, log, clock
        self.done, self.seconds = 0, []
        self.lock = threading.Lock()

    def start(self) -> float:
        return self.clock()

    def finished(self, name: str, started: float, ok: bool = True) -> str:
        with self.lock:
            self.done += 1
            self.seconds.append(self.clock() - started)
            mean = sum(self.seconds) / len(self.seconds)
            left = self.total - self.done
            eta = left * mean / min(self.jobs, max(1, left)) if left else 0.0
            line = (f"[ablate] {self.done}/{self.total} cells {'done' if ok else 'tried'} ({name}); "
                    f"{_duration(mean)} a cell, ETA {_duration(eta)} with {self.jobs} side by side")
        self.log(line)
        return line


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours / 24:.1f} days"


def _train_here(cells, out, device, progress, log) -> list[str]:
    failed = []
    for i, cell in enumerate(cells, 1):
        path = run_dir(out, cell)
        if is_finished(path, cell.recipe):  # finished meanwhile by another runner on the same folder
            continue
        recipe = _with_device(cell.recipe, device) if device else cell.recipe
        log(f"[ablate] train {cell.name} ({i}/{len(cells)}) -> {path}")
        started = progress.start()
        try:
            train(recipe, path, resume=True)
            (path / "error.txt").unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 — one failed cell must not stop the grid
            failed.append(cell.name)
            path.mkdir(parents=True, exist_ok=True)
            (path / "error.txt").write_text(traceback.format_exc())
            log(f"[ablate] FAILED {cell.name}: {type(e).__name__}: {e} (see {path / 'error.txt'})")
        progress.finished(cell.name, started, ok=cell.name not in failed)
    return failed


def train_command(recipe: Path, run_dir: Path) -> list[str]:
    """The subprocess that trains one cell: the installed package's own train
    command, so a grid runs wherever `zoo` imports (no checkout needed)."""
    return [sys.executable, "-m", "zoo.commands.train", str(recipe), "--run-dir", str(run_dir)]


def _train_side_by_side(cells, out, jobs, devices, progress, log) -> list[str]:
    slots: queue.Queue = queue.Queue()  # a device per slot; a job takes one while it runs
    for k in range(jobs):
        slots.put(devices[k % len(devices)] if devices else None)
    threads_each = max(1, (os.cpu_count() or 1) // jobs)

    def work(cell) -> bool:
        device = slots.get()
        try:
            path = run_dir(out, cell)
            if is_finished(path, cell.recipe):
                return True
            recipe = _with_device(cell.recipe, device) if device else cell.recipe
            # Not recipe.yaml: that is the run's own, which resuming checks the cell's against.
            save_recipe(recipe, path / "cell.yaml")
            cmd = train_command(path / "cell.yaml", path)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads_each)}
            log(f"[ablate] train {cell.name} on {device or 'the default device'} -> {path}")
            started = progress.start()
            with open(path / "train.log", "a") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            ok = rc == 0 and is_finished(path, cell.recipe)
            if not ok:
                log(f"[ablate] FAILED {cell.name}: exit status {rc} (see {path / 'train.log'})")
            progress.finished(cell.name, started, ok)
            return ok
        finally:
            slots.put(device)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(work, cells))
    return [c.name for c, ok in zip(cells, done) if not ok]


def _with_device(recipe: Recipe, device: str) -> Recipe:
    raw = recipe_to_dict(recipe)
    raw["train"]["device"] = device
    return recipe_from_dict(raw, f"device {device!r}")
