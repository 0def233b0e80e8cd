"""Resuming a run from its checkpoints, under the recipe it is resumed with.

`restore(...)` loads the newest readable checkpoint (`last`, else `previous`,
saying so) into a freshly built model, optimizer, scheduler and scaler, and
returns where the run stands. The recipe may differ from the one the
checkpoint was trained with in ways the run can follow: a longer (or shorter)
`train.iters` stretches the schedule to the new end. Changes it cannot follow
(another schedule, warm-up, lr, optimizer or its settings) are refused with a
one-line error naming the key, rather than silently keeping the saved ones.
The best mIoU comes from the `best` pointer, which may be newer than `last`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zoo import runfolder as ckpt
from zoo.engine.optim import ScheduleChangeError, restore_scheduler
from zoo.recipe import RecipeError

# LRFactor settings -> the recipe keys they come from.
_SCHEDULE_KEYS = {"name": "train.schedule", "warmup_iters": "train.warmup_iters", "power": "train.power",
                  "min_lr_ratio": "train.min_lr_ratio", "total_iters": "train.iters"}
# Optimizer hyperparameters that load_state_dict would silently restore over the recipe's.
_OPTIMIZER_KEYS = {"momentum": "train.momentum", "weight_decay": "train.weight_decay",
                   "betas": "train.betas"}


@dataclass
class Resumed:
    path: Path
    iteration: int
    samples_seen: int
    best_miou: float
    rng: dict
    notes: list[str] = field(default_factory=list)  # lines for the run's log


def _load(path: Path, device) -> tuple[dict, dict]:
    return ckpt.load_weights(path, device), ckpt.load_train_state(path)


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
            main: bool = True) -> Resumed:
    """Load the newest readable checkpoint into the given parts; `main` (rank 0)
    alone rewrites pointers."""
    path, weights, state, notes = _newest_readable(Path(ckpt_dir), device, main)
    t = recipe.train
    if state["iteration"] > t.iters:
        raise RecipeError(f"train.iters ({t.iters}) is below the iteration the run in "
                          f"{Path(ckpt_dir).parent} has reached ({state['iteration']})")
    model.load_state_dict(weights)
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
    scaler.load_state_dict(state["scaler"])
    best = ckpt.read_pointer(ckpt_dir, "best")
    best_miou = best["mIoU"] if best and "mIoU" in best else state["best_miou"]
    return Resumed(path, state["iteration"], state["samples_seen"], best_miou, state["rng"], notes)
