"""Which folder a training command writes to, as mmsegmentation users expect.

`runs/<recipe>` by default, `runs/<recipe>-<8 hex digits>` when the command has
overrides (a digest of them, independent of their order), `runs/<name>` with
`--name`, or exactly `--run-dir`. The same command therefore always names the
same folder, and running it again resumes from that folder's last checkpoint.
Starting over in a folder that holds a checkpoint takes `--fresh`, which moves
the old run aside (`<folder>.<timestamp>`) instead of deleting it.

One process trains in a folder at a time: `lock_run_dir` holds an exclusive
`flock` on `<folder>/.lock` (which names its holder), and a second command
on the same folder is refused, naming the process. The kernel releases the
lock when its process dies however it dies, so a lock left by a killed run
never blocks the next one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from zoo.engine import distributed as D
from zoo.hub.formats import read_pointer, resolve

RUNS = Path("runs")
LOCK_FILE = ".lock"


class RunFolderBusy(ValueError):
    """Another process trains in the run folder; the message names the folder and the process."""


def overrides_digest(overrides) -> str:
    """8 hex digits naming a set of `key=value` overrides; the last value of a key wins,
    as in the recipe loader, and their order does not matter, unless one key lies inside
    another (`train={iters: 5}` and `train.iters=4`), where the later one wins there too."""
    items = [tuple(part.strip() for part in str(item).partition("=")[::2]) for item in overrides]
    pairs = dict(items)
    nested = any(b.startswith(a + ".") for a in pairs for b in pairs)
    text = json.dumps(items if nested else sorted(pairs.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(recipe_path, overrides=(), name: str | None = None) -> Path:
    if name:
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"--name {name!r}: a folder name, without '/' (use --run-dir for a path)")
        return RUNS / name
    stem = Path(recipe_path).stem
    return RUNS / (f"{stem}-{overrides_digest(overrides)}" if overrides else stem)


def has_checkpoint(run_dir: Path) -> bool:
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
    check_folder_path(folder, "--run-dir" if run_dir is not None else "the run folder")
    if resume and not has_checkpoint(folder):
        raise FileNotFoundError(f"--resume: {folder.resolve()} holds no checkpoint (checkpoints/last.json)")
    if fresh and os.environ.get("RANK", "0") == "0" and folder.exists() and any(folder.iterdir()):
        aside = folder.with_name(f"{folder.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        with lock_run_dir(folder) as lock:  # never move a running run's folder away from it
            folder.rename(aside)
            lock.path = aside / LOCK_FILE
        print(f"--fresh: moved the earlier run in {folder} to {aside}", file=sys.stderr)
    return folder


def check_folder_path(folder: Path, what: str) -> None:
    """Refuse a run folder that is a file, or lies under one, before anything is written."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                inside = "" if p == folder else f" lies under {p}, which"
                raise ValueError(f"{what} {folder}{inside} is a file, not a folder; name a new folder "
                                 "or an earlier run's")
            return


class RunLock:
    """An exclusive `flock` on `<run folder>/.lock` (see the module docstring). `release()`
    (or leaving a `with` block) removes the lock file, and the folder too when the lock
    created it and nothing else was written there."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir)
        self.path = self.folder / LOCK_FILE
        self.created = not self.folder.exists()
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the folder goes unguarded
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunFolderBusy(f"{self.folder} is in use by {holder} (lock file {self.path}); "
                                    "wait for it to end, or train into another folder (--name, "
                                    "--run-dir)") from None
            except OSError as e:  # a file system without flock (some network mounts)
                os.close(fd)
                self.path.unlink(missing_ok=True)
                print(f"warning: cannot lock {self.path} ({e.strerror}); a second run in this folder "
                      "would not be refused", file=sys.stderr)
                return self
            if self._ours(fd):  # not a file its last holder unlinked while we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def _ours(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is None:
            return
        if self._ours(self.fd):
            self.path.unlink()  # while still held: whoever opens it next gets a fresh file
        os.close(self.fd)
        self.fd = None
        if self.created:
            try:
                self.folder.rmdir()  # only when empty: an __init__ that failed leaves nothing behind
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_dir(run_dir: Path) -> RunLock:
    """Hold the run folder (created if need be) for this process; RunFolderBusy when another holds it."""
    return RunLock(run_dir).acquire()


def lock_on_main(run_dir: Path, main: bool) -> RunLock | None:
    """Under torch.distributed, rank 0 (`main`) holds the lock for all ranks, and a
    refusal stops every rank alike (none waits for the others at a collective)."""
    lock, refused = None, None
    if main:
        try:
            lock = lock_run_dir(run_dir)
        except RunFolderBusy as e:
            refused = str(e)
    refused = D.broadcast_object(refused)
    if refused:
        raise RunFolderBusy(refused)
    return lock


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
    last = read_pointer(Path(run_dir) / "checkpoints", "last")
    if last is None:
        return (f"interrupted; {run_dir} holds no checkpoint yet, so running again starts over "
                f"at iteration 0: {command}")
    iteration = last.get("iteration", "?")
    return (f"interrupted; the checkpoint at iteration {iteration} in {run_dir} is intact. "
            f"Resume with: {command}")
