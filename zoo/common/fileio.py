"""Crash-safe file writes: a temporary file in the same folder, flushed to
disk, then renamed over the target with `os.replace`, so a reader (or a
process killed mid-write) sees the old file or the new one, never half of one.
Imports nothing heavy, so the recipe loader can use it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _replace_from_temp(path: Path, fill) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.close(fd)
        fill(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _replace_from_temp(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_copy(src: Path, dst: Path) -> None:
    _replace_from_temp(dst, lambda tmp: shutil.copyfile(src, tmp))
