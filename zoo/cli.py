"""What every command line shares: one-line errors for bad input.

A user's mistake (bad recipe key, missing dataset folder, corrupt image,
unknown model) prints one line naming the culprit and exits with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys

# OpenCV logs decoding failures itself; the DataError raised for them names the file already.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")


def user_errors() -> tuple[type[BaseException], ...]:
    from zoo.data.base import DataError
    from zoo.engine.trainer import TrainingError
    from zoo.recipe import RecipeError
    return (RecipeError, DataError, TrainingError, FileNotFoundError, ValueError)


def run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 — sorted below
        if not isinstance(e, user_errors()) and "DataLoader worker" not in str(e):
            raise
        # Errors raised in loader workers carry the worker's traceback; keep its last line.
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        message = lines[-1] if lines else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
