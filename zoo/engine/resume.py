"""Resuming a run from its checkpoints, under the recipe it is resumed with.

`restore(...)` loads the newest readable checkpoint (`last`, else `previous`,
saying so) into a freshly built model, optimizer, scheduler and scaler, and
returns where the run stands. The recipe may differ from the one the
checkpoint was trained with in ways the run can follow: a longer (or shorter)
`train.iters` stretches the schedule to the new end. Changes it cannot follow
(another schedule, warm-up, lr, optimizer or its settings) are refused with a
one-line error naming the key, rather than silently keeping the saved ones.
So are changes to what the weights mean or learn (`FIXED_KEYS`: the model, the
data set and its classes, the input normalisation, the loss), checked by
`check_unchanged` against the run's recipe.yaml before anything is built.
The best mIoU comes from the `best` pointer, which may be newer than `last`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo.engine.ema import load_ema_state
from zoo.engine.optim import ScheduleChangeError, restore_scheduler
from zoo.engine.recipe import RecipeError, recipe_to_dict
from zoo.hub import formats as ckpt

# LRFactor settings -> the recipe keys they come from.
_SCHEDULE_KEYS = {"name": "train.schedule", "warmup_iters": "train.warmup_iters", "power": "train.power",
                  "min_lr_ratio": "train.min_lr_ratio", "total_iters": "train.iters"}
# Optimizer hyperparameters that load_state_dict would silently restore over the recipe's.
_OPTIMIZER_KEYS = {"momentum": "train.momentum", "weight_decay": "train.weight_decay",
                   "betas": "train.betas"}
# Recipe keys (and every key under them) that a resumed run cannot follow: the weights
# would not load, or would go on meaning or learning something else than the recipe says.
FIXED_KEYS = ("model", "data.dataset", "data.options", "data.ignore_index", "data.mean", "data.std",
              "train.loss", "train.class_weights", "train.aux_weight", "train.ema_decay")


@dataclass
class Resumed:
    path: Path
    iteration: int
    samples_seen: int
    best_miou: float
    rng: dict
    notes: list[str] = field(default_factory=list)  # lines for the run's log


def _load(path: Path, device) -> tuple[dict, dict]:
    return ckpt.read_weights(path, device), ckpt.load_train_state(path)


def _newest_readable(ckpt_dir: Path, device, main: bool) -> tuple[Path, dict, dict, list[str]]:
    notes, failures = [], []
    seen = []
    for pointer in ("last", "previous"):
        path = ckpt.resolve(ckpt_dir, pointer)
        if path is None or path in seen:
            continue
        seen.append(path)
        try:
            weights, state = _load(path, device)
        except (ckpt.CheckpointError, FileNotFoundError) as e:
            failures.append(str(e))
            continue
        if failures:
            notes.append(f"warning: the newest checkpoint is unreadable ({failures[0]}); "
                         f"resuming from the previous one, {path.name}")
            info = ckpt.read_pointer(ckpt_dir, pointer)
            if main:  # `last` names the intact one now, so the broken one is never kept as `previous`
                ckpt.set_pointer(ckpt_dir, "last", path, keep_previous=False, iteration=info.get("iteration"))
        return path, weights, state, notes
    raise ckpt.CheckpointError(f"{ckpt_dir}: no readable checkpoint to resume from: " + "; ".join(failures))


def _changed(key: str, saved, now, path: Path) -> RecipeError:
    return RecipeError(f"{key} changed {saved} -> {now} since the checkpoint {path}: a resumed run "
                       f"cannot follow that; set it back, or train into a new run folder")


def _flat(d, prefix: str = "") -> dict:
    if isinstance(d, tuple):  # recipes built in code may hold tuples where YAML has lists
        d = list(d)
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _changes(recipe, run_dir: Path) -> tuple[Path, list[tuple[str, object, object]]]:
    """(the run's recipe.yaml, [(flat key, its value there, its value in `recipe`)] for every key
    whose values differ, by key); no changes when the run folder has no recipe.yaml. A key left
    out keeps its default, as null does."""
    saved_file = Path(run_dir) / "recipe.yaml"
    if not saved_file.is_file():
        return saved_file, []
    old, new = _flat(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}), _flat(recipe_to_dict(recipe))
    return saved_file, [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _under(key: str, prefixes: Sequence[str]) -> int | None:
    """The index of the first of `prefixes` that is `key` or a section above it, else None."""
    return next((i for i, p in enumerate(prefixes) if key == p or key.startswith(p + ".")), None)


def check_unchanged(recipe, run_dir: Path) -> None:
    """Refuse, naming the first key (in `FIXED_KEYS`' order), a recipe that changes a `FIXED_KEYS`
    value of the run in `run_dir` (its recipe.yaml, written when it started or last resumed)."""
    saved_file, changes = _changes(recipe, run_dir)
    fixed = [(i, change) for change in changes if (i := _under(change[0], FIXED_KEYS)) is not None]
    if fixed:
        k, old, new = min(fixed, key=lambda f: (f[0], f[1][0]))[1]
        raise RecipeError(f"{k} changed {_show(old)} -> {_show(new)} since the run in {run_dir} began "
                          f"({saved_file}): a resumed run cannot follow that; set it back, or train into a "
                          "new run folder (--name, --run-dir or --fresh)")


# Where and how a run ran, not what it learned: a run of the same recipe on another machine.
_SETTING_KEYS = ("train.device", "train.threads", "data.root", "data.num_workers", "log")


def first_difference(recipe, run_dir: Path) -> str | None:
    """The first key (sorted) whose value in `recipe` differs from the run's recipe.yaml, as
    "key: saved -> now", or None when the run trained this recipe (settings of where and how
    it ran aside); None too when the run folder has no recipe.yaml."""
    for k, old, new in _changes(recipe, run_dir)[1]:
        if _under(k, _SETTING_KEYS) is None:
            return f"{k}: {_show(old)} -> {_show(new)}"
    return None


def _show(value) -> str:
    return "unset" if value is None else str(value)


def check_classes(ckpt_dir: Path, classes: list) -> None:
    """Refuse data whose classes differ from those the last checkpoint was trained on."""
    path = ckpt.resolve(Path(ckpt_dir), "last")
    try:
        saved = ckpt.load_meta(path).get("classes") if path is not None else None
    except (ckpt.CheckpointError, FileNotFoundError):
        return  # restore() names the unreadable file, or falls back to `previous`
    if saved is not None and list(saved) != list(classes):
        raise RecipeError(f"the data set's classes changed since the checkpoint {path}: {len(saved)} "
                          f"({', '.join(saved[:4])}, ...) -> {len(classes)} ({', '.join(classes[:4])}, ...); "
                          "point data at the run's data set, or train into a new run folder")


def _check_optimizer(optimizer, saved: dict, recipe, path: Path) -> None:
    groups = saved.get("param_groups") or []
    if len(groups) != len(optimizer.param_groups) or any(  # SGD groups have no betas, AdamW's do
            ("betas" in g) != ("betas" in h) for g, h in zip(groups, optimizer.param_groups)):
        raise RecipeError(f"train.optimizer={recipe.train.optimizer} does not match the optimizer state "
                          f"saved in {path} (another optimizer, or parameters frozen differently); "
                          "set it back, or train into a new run folder")
    for g, h in zip(groups, optimizer.param_groups):
        for setting, key in _OPTIMIZER_KEYS.items():
            if setting in h and list(_as_seq(g[setting])) != list(_as_seq(h[setting])):
                raise _changed(key, g[setting], h[setting], path)


def _as_seq(v):
    return v if isinstance(v, (list, tuple)) else [v]


def restore(ckpt_dir: Path, *, model, optimizer, scheduler, scaler, recipe, device,
            main: bool = True, ema=None) -> Resumed:
    """Load the newest readable checkpoint into the given parts (with ``ema``, its weights are the
    average's: `zoo/engine/ema.py`); `main` (rank 0) alone rewrites pointers."""
    path, weights, state, notes = _newest_readable(Path(ckpt_dir), device, main)
    t = recipe.train
    if state["iteration"] > t.iters:
        raise RecipeError(f"train.iters ({t.iters}) is below the iteration the run in "
                          f"{Path(ckpt_dir).parent} has reached ({state['iteration']})")
    if ema is None:
        model.load_state_dict(weights)
    else:
        load_ema_state(model, ema, weights, state.get("ema"), str(path))
    _check_optimizer(optimizer, state["optimizer"], recipe, path)
    optimizer.load_state_dict(state["optimizer"])
    try:
        changed = restore_scheduler(scheduler, state["scheduler"])
    except ScheduleChangeError as e:
        if e.setting == "base_lrs":
            names = [g.get("name", "") for g in optimizer.param_groups]
            moved = [n for n, a, b in zip(names, e.saved, e.now) if a != b]
            key = "train.lr" if any(not n.startswith("encoder") for n in moved) else "train.encoder_lr_mult"
            raise _changed(key, e.saved, e.now, path) from None
        raise _changed(_SCHEDULE_KEYS.get(e.setting, f"the schedule's {e.setting}"), e.saved, e.now,
                       path) from None
    if "total_iters" in changed:
        old, new = changed["total_iters"]
        notes.append(f"train.iters changed {old} -> {new}: the schedule now runs to {new}")
    if scaler.is_enabled() and not state["scaler"]:  # written without fp16, whose loss scale it lacks
        notes.append(f"train.amp is fp16 now, not when {path} was written: the loss scale starts afresh")
    else:
        scaler.load_state_dict(state["scaler"])
    best = ckpt.read_pointer(ckpt_dir, "best")
    best_miou = best["mIoU"] if best and "mIoU" in best else state["best_miou"]
    return Resumed(path, state["iteration"], state["samples_seen"], best_miou, state["rng"], notes)
