"""Crash-safe file writes: a temporary file in the same folder, flushed to
disk, then renamed over the target with `os.replace` and the folder flushed
too, so a reader (or a process killed mid-write, or a machine losing power)
sees the old file or the new one, never half of one. The file keeps the mode
of the one it replaces, else gets what the umask gives a new file (not
mkstemp's 0600). Imports nothing heavy, so the recipe loader can use it."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)  # the one way to read it; read once, at import, before any thread runs
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is all there is
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_from_temp(path: Path, fill) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.close(fd)
        fill(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    _replace_from_temp(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_copy(src: Path, dst: Path) -> None:
    _replace_from_temp(dst, lambda tmp: shutil.copyfile(src, tmp))
