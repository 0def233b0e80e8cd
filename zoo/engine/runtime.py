"""Runtime settings and signals of a run: what a recipe's `auto` precision, memory
layout and compilation resolve to on a device, and Ctrl-C during training.
(Seeding and RNG state, the other runtime concerns, live in `zoo/engine/reproduce.py`.)"""
from __future__ import annotations

import signal
import sys
import threading

import torch


def resolve_speed(train_cfg, device: torch.device) -> dict:
    """`auto` settings: bf16 autocast and channels_last on CUDA, off on CPU
    (where both slow convolutions down); torch.compile only when asked."""
    cuda = device.type == "cuda"
    amp = train_cfg.amp
    if amp == "auto":
        amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "off"
    if amp != "off" and not cuda and amp == "fp16":
        raise ValueError("train.amp=fp16 needs CUDA; use bf16 or off on CPU")
    channels_last = train_cfg.channels_last == "on" or (train_cfg.channels_last == "auto" and cuda)
    return {"amp": amp, "channels_last": channels_last, "compile": train_cfg.compile == "on"}


class StopRequest:
    """Ctrl-C while training, as a request: the first one sets `requested`, so that the
    step under way finishes and the trainer checkpoints before it stops (a
    KeyboardInterrupt raised mid-step could leave the optimiser half-applied); a second
    one raises KeyboardInterrupt at once. Inert outside the main thread, and where
    SIGINT is ignored (a run started with nohup keeps ignoring it)."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("interrupt: finishing this step, then writing a checkpoint (Ctrl-C again stops "
                  "at once, without one)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
