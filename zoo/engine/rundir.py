"""Which folder a training command writes to, as mmsegmentation users expect.

`runs/<recipe>` by default, `runs/<recipe>-<8 hex digits>` when the command has
overrides (a digest of them, independent of their order), `runs/<name>` with
`--name`, or exactly `--run-dir`. The same command therefore always names the
same folder, and running it again resumes from that folder's last checkpoint.
Starting over in a folder that holds a checkpoint takes `--fresh`, which moves
the old run aside (`<folder>.<timestamp>`) instead of deleting it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

RUNS = Path("runs")


def overrides_digest(overrides) -> str:
    """8 hex digits naming a set of `key=value` overrides; the last value of a key wins,
    as in the recipe loader, and their order does not matter."""
    pairs: dict[str, str] = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        pairs[key.strip()] = value.strip()
    text = json.dumps(sorted(pairs.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(recipe_path, overrides=(), name: str | None = None) -> Path:
    if name:
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"--name {name!r}: a folder name, without '/' (use --run-dir for a path)")
        return RUNS / name
    stem = Path(recipe_path).stem
    return RUNS / (f"{stem}-{overrides_digest(overrides)}" if overrides else stem)


def has_checkpoint(run_dir: Path) -> bool:
    from zoo.runfolder import resolve
    return resolve(Path(run_dir) / "checkpoints", "last") is not None


def newest_with_checkpoint(recipe_path) -> Path | None:
    """The run of this recipe whose last checkpoint is newest; folders without one are skipped."""
    stem = Path(recipe_path).stem
    candidates = [p for p in RUNS.glob(f"{stem}*") if p.is_dir() and has_checkpoint(p)
                  and (p.name == stem or p.name.startswith(stem + "-"))]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p / "checkpoints" / "last.json").stat().st_mtime)


def pick_run_dir(recipe_path, overrides=(), *, run_dir=None, name=None, resume=False,
                 fresh=False) -> Path:
    """The folder to train in; with `fresh`, an earlier run there is moved aside first."""
    if resume and fresh:
        raise ValueError("--resume and --fresh contradict each other; pass one")
    if run_dir is None and name is None and resume:
        found = newest_with_checkpoint(recipe_path)
        if found is None:
            raise FileNotFoundError(f"--resume: no folder {(RUNS / Path(recipe_path).stem).resolve()}[-*] "
                                    "holds a checkpoint (checkpoints/last.json)")
        return found
    folder = Path(run_dir) if run_dir is not None else default_run_dir(recipe_path, overrides, name)
    if resume and not has_checkpoint(folder):
        raise FileNotFoundError(f"--resume: {folder.resolve()} holds no checkpoint (checkpoints/last.json)")
    if fresh and os.environ.get("RANK", "0") == "0" and folder.exists() and any(folder.iterdir()):
        aside = folder.with_name(f"{folder.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
        print(f"--fresh: moved the earlier run in {folder} to {aside}", file=sys.stderr)
    return folder


def resume_command(recipe_path, overrides=(), *, run_dir=None, name=None) -> str:
    """The command line that continues this run (the same one, minus --fresh)."""
    script = sys.argv[0] if sys.argv else ""
    if Path(script).name == "segzoo":  # the installed command line
        words = ["segzoo", "train"]
    elif Path(script).parts[-2:] == ("zoo", "__main__.py"):
        words = ["python", "-m", "zoo", "train"]
    else:
        words = ["python", script if script.endswith("train.py") else "tools/train.py"]
    words += [str(recipe_path), *map(str, overrides)]
    if run_dir is not None:
        words += ["--run-dir", str(run_dir)]
    elif name:
        words += ["--name", name]
    return shlex.join(words)


def interrupted_message(run_dir: Path, command: str) -> str:
    """What Ctrl-C prints: the folder, the iteration the checkpoint holds, how to go on."""
    from zoo.runfolder import read_pointer
    last = read_pointer(Path(run_dir) / "checkpoints", "last")
    if last is None:
        return (f"interrupted; {run_dir} holds no checkpoint yet, so running again starts over "
                f"at iteration 0: {command}")
    iteration = last.get("iteration", "?")
    return (f"interrupted; the checkpoint at iteration {iteration} in {run_dir} is intact. "
            f"Resume with: {command}")
