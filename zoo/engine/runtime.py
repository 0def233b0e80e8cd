"""Speed settings of a run: what a recipe's `auto` precision, memory layout
and compilation resolve to on a device. (Seeding and RNG state, the other
runtime concerns, live in `zoo/engine/reproduce.py`.)"""
from __future__ import annotations

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
