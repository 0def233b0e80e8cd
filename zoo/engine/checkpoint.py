"""Checkpoints as data: safetensors tensors plus JSON, written crash-safely.

Layout inside a run folder:

    checkpoints/
      iter_000400/
        model.safetensors        weights only
        meta.json                model config (zoo.create arguments), classes, palette,
                                 mean/std, eval protocol, metrics, iteration
        state.safetensors        optimizer / scheduler / scaler / RNG tensors
        state.json               the same states' non-tensor structure
      last.json                  {"checkpoint": "iter_000400", "iteration": 400}
      best.json                  {"checkpoint": "iter_000200", "iteration": 200, "mIoU": ...}

A checkpoint folder is written under a temporary name and renamed into
place; only then is the pointer (`last.json`, `best.json`) replaced with
`os.replace`. A SIGKILL at any moment therefore leaves every pointer naming a
complete folder. Nothing here unpickles: nested states are split into a JSON
skeleton and a flat dict of tensors.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.fileio import atomic_write_json

FORMAT = "segzoo-checkpoint/1"
_TENSOR = "__tensor__"


def flatten_state(obj, prefix: str = "", tensors: dict | None = None):
    """Split a nested state (dicts, lists, tuples, tensors, numbers) into a
    JSON-able skeleton and a flat {key: tensor} dict."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}, tensors
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"state keys must be str or int at {prefix!r}")
        items = {}
        for k, v in obj.items():
            items[json.dumps(k)] = flatten_state(v, f"{prefix}/{k}", tensors)[0]
        return {"__dict__": items}, tensors
    if isinstance(obj, (list, tuple)):
        seq = [flatten_state(v, f"{prefix}/{i}", tensors)[0] for i, v in enumerate(obj)]
        return ({"__tuple__": seq} if isinstance(obj, tuple) else seq), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    if hasattr(obj, "tolist"):  # numpy arrays and scalars (numpy RNG state)
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}, tensors
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} without pickling")


def unflatten_state(skeleton, tensors: dict):
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__ndarray__" in skeleton:
            import numpy as np
            return np.array(skeleton["__ndarray__"], dtype=skeleton["dtype"])
        return {json.loads(k): unflatten_state(v, tensors) for k, v in skeleton["__dict__"].items()}
    return skeleton


def save_checkpoint(ckpt_dir: Path, name: str, *, model_state: dict, meta: dict,
                    train_state: dict | None = None, keep: tuple[str, ...] = ("last", "best")) -> Path:
    """Write `ckpt_dir/<name>/` atomically and return it. Folders no pointer
    in `keep` names any more are removed afterwards."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / name
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".{name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=2) + "\n")
        if train_state is not None:
            skeleton, tensors = flatten_state(train_state)
            save_file(tensors, str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps(skeleton) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # same iteration written again (e.g. last == best): swap
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def set_pointer(ckpt_dir: Path, pointer: str, checkpoint: Path, **info) -> None:
    atomic_write_json(Path(ckpt_dir) / f"{pointer}.json", {"checkpoint": Path(checkpoint).name, **info})
    prune(ckpt_dir)


def read_pointer(ckpt_dir: Path, pointer: str) -> dict | None:
    path = Path(ckpt_dir) / f"{pointer}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def resolve(ckpt_dir: Path, pointer: str = "last") -> Path | None:
    info = read_pointer(ckpt_dir, pointer)
    return None if info is None else Path(ckpt_dir) / info["checkpoint"]


def prune(ckpt_dir: Path) -> None:
    """Remove checkpoint folders no pointer names, and leftovers of killed writes."""
    ckpt_dir = Path(ckpt_dir)
    live = {info["checkpoint"] for p in ckpt_dir.glob("*.json")
            if (info := json.loads(p.read_text())) and "checkpoint" in info}
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d.name not in live:
            shutil.rmtree(d, ignore_errors=True)


def load_meta(checkpoint: Path) -> dict:
    path = Path(checkpoint) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint metadata (expected model.safetensors + meta.json)")
    return json.loads(path.read_text())


def load_weights(checkpoint: Path, device="cpu") -> dict:
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights file")
    return load_file(str(path), device=str(device))


def load_train_state(checkpoint: Path) -> dict:
    checkpoint = Path(checkpoint)
    skeleton = json.loads((checkpoint / "state.json").read_text())
    tensors = load_file(str(checkpoint / "state.safetensors"))
    return unflatten_state(skeleton, tensors)
