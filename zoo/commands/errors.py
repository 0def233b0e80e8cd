"""What every command line shares: one-line errors for bad input.

A user's mistake (bad recipe key, missing dataset folder, corrupt image,
unknown model) prints one line naming the culprit and exits with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import re
import sys

# OpenCV logs decoding failures itself; the DataError raised for them names the file already.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")


def user_errors() -> tuple[type[BaseException], ...]:
    from zoo.data.base import DataError
    from zoo.engine.distributed import DeviceError
    from zoo.engine.recipe import RecipeError
    from zoo.engine.trainer import TrainingError
    from zoo.hub.formats import CheckpointError
    from zoo.models.encoders import EncoderWeightsError
    return (RecipeError, DataError, TrainingError, CheckpointError, DeviceError, EncoderWeightsError,
            FileNotFoundError, ValueError)


def message(e: BaseException) -> str:
    """The one line to print for `e`. torch re-raises an error from a DataLoader
    worker as the same type whose message is the worker's whole traceback, ending
    in `zoo.data.base.DataError: <message>`: the message is that line's tail."""
    text = str(e).strip()
    if "DataLoader worker" in text and "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        for name in (f"{type(e).__module__}.{type(e).__qualname__}", type(e).__qualname__):
            if last.startswith(name + ": "):
                return last[len(name) + 2:]
        return last
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 — sorted below
        # A worker killed by a signal (often out of memory) is no bug in the code either.
        killed = isinstance(e, RuntimeError) and re.match(r"DataLoader worker \(pid", str(e))
        if not isinstance(e, user_errors()) and not killed:
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        sys.exit(2)
