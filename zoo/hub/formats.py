"""The run folder's checkpoints: their layout, crash-safe writing and reading.

The one module that knows where a run keeps its checkpoints: the trainer
writes through it, and the hub, `zoo.load` and the tools read through it.
It sits below both (it needs only safetensors and JSON), so the engine
never calls back into the hub to find its own files.

Layout inside a run folder:

    checkpoints/
      iter_000400/
        model.safetensors        weights only
        meta.json                model config (zoo.create arguments), classes, palette,
                                 mean/std, eval protocol, metrics, iteration, determinism
        state.safetensors        optimizer / scheduler / scaler / RNG tensors
        state.json               the same states' non-tensor structure
      last.json                  {"checkpoint": "iter_000400", "iteration": 400}
      previous.json              the checkpoint `last` named before (a resume falls back to it)
      best.json                  {"checkpoint": "iter_000200", "iteration": 200, "mIoU": ...}

A checkpoint folder is written under a temporary name and renamed into
place, under a name no folder holds yet (`iter_000400-1` when the iteration
is written again, e.g. after resuming from an earlier checkpoint); only then
is a pointer replaced with `os.replace`. A folder is removed only once no
pointer names it. A SIGKILL at any moment therefore leaves every pointer
naming a complete folder. Nothing here unpickles: nested states are split
into a JSON skeleton and a flat dict of tensors. A file that cannot be read
raises `CheckpointError`, naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from zoo.common.fileio import atomic_write_json

FORMAT = "segzoo-checkpoint/1"
CALIBRATED_PICTURES = "pictures-calibrated"  # `segzoo eval --calibration` writes them; `--ship` takes them
_TENSOR = "__tensor__"


class CheckpointError(ValueError):
    """A checkpoint file that is there but cannot be used (truncated, corrupt, not ours);
    the message is one line naming the file."""


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


def _free_name(ckpt_dir: Path, name: str) -> Path:
    """`name`, or `name-1`, `name-2`, ...: a folder a pointer may name is never replaced."""
    path, n = ckpt_dir / name, 0
    while path.exists():
        n += 1
        path = ckpt_dir / f"{name}-{n}"
    return path


def save_checkpoint(ckpt_dir: Path, name: str, *, model_state: dict, meta: dict,
                    train_state: dict | None = None) -> Path:
    """Write a complete checkpoint folder `ckpt_dir/<name>/` (or `<name>-N/` when
    that name is taken) and return it; no pointer names it yet (`set_pointer`)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
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
        final = _free_name(ckpt_dir, name)
        os.replace(tmp, final)  # onto a name nothing holds: never a moment without the old folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def set_pointer(ckpt_dir: Path, pointer: str, checkpoint: Path, *, keep_previous: bool = True,
                **info) -> None:
    """Point `pointer` at `checkpoint` (atomically), then prune. Moving `last` keeps
    the checkpoint it named as `previous` (unless `keep_previous` is false), so one
    older intact folder survives a damaged newest one."""
    if pointer == "last" and keep_previous:
        old = read_pointer(ckpt_dir, "last")
        if old is not None and old["checkpoint"] != Path(checkpoint).name:
            atomic_write_json(Path(ckpt_dir) / "previous.json", old)
    atomic_write_json(Path(ckpt_dir) / f"{pointer}.json", {"checkpoint": Path(checkpoint).name, **info})
    prune(ckpt_dir)


def read_pointer(ckpt_dir: Path, pointer: str) -> dict | None:
    path = Path(ckpt_dir) / f"{pointer}.json"
    if not path.is_file():
        return None
    info = _read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("checkpoint"), str):
        raise CheckpointError(f"{path}: not a checkpoint pointer (expected {{\"checkpoint\": <folder>, ...}})")
    return info


def resolve(ckpt_dir: Path, pointer: str = "last") -> Path | None:
    info = read_pointer(ckpt_dir, pointer)
    return None if info is None else Path(ckpt_dir) / info["checkpoint"]


def resolve_run(run_dir: Path, pointer: str = "best") -> Path:
    """The checkpoint folder a run folder's pointer names; `best` falls back to `last`."""
    ckpts = Path(run_dir) / "checkpoints"
    ckpt = resolve(ckpts, pointer) or (resolve(ckpts, "last") if pointer == "best" else None)
    if ckpt is None:
        also = " nor last.json" if pointer == "best" else ""
        raise FileNotFoundError(f"{ckpts}: no {pointer}.json{also}; the run has saved no checkpoint yet")
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpts}/{pointer}.json names {ckpt.name}, which does not exist")
    return ckpt


def prune(ckpt_dir: Path) -> None:
    """Remove checkpoint folders no pointer names, and leftovers of killed writes."""
    ckpt_dir = Path(ckpt_dir)
    live = set()
    for path in ckpt_dir.glob("*.json"):
        try:
            live.add(read_pointer(ckpt_dir, path.stem)["checkpoint"])
        except CheckpointError:
            return  # what it names cannot be told: remove nothing

    for d in ckpt_dir.iterdir():
        if d.is_dir() and d.name not in live:
            shutil.rmtree(d, ignore_errors=True)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt JSON file ({e})") from None


def read_tensors(path: Path, device="cpu") -> dict:
    """A safetensors file's tensors; a missing, truncated or corrupt file raises an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the checkpoint folder")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        detail = str(e).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({detail})") from None


def check_readable(checkpoint: Path) -> None:
    """Raise CheckpointError (naming the file) unless meta.json parses and the
    weights' safetensors header covers the file; reads no tensor data."""
    load_meta(checkpoint)
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights file")
    try:
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as e:
        detail = str(e).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({detail})") from None


def load_meta(checkpoint: Path) -> dict:
    path = Path(checkpoint) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint metadata (expected model.safetensors + meta.json)")
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def weights_sha256(checkpoint: Path) -> str:
    """The sha256 of a checkpoint's model.safetensors: what an evaluation records of the
    weights it scored, and what publishing checks an evaluation against."""
    import hashlib
    digest = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(checkpoint: Path, device="cpu") -> dict:
    return read_tensors(Path(checkpoint) / "model.safetensors", device)


def load_train_state(checkpoint: Path) -> dict:
    checkpoint = Path(checkpoint)
    skeleton = _read_json(checkpoint / "state.json") if (checkpoint / "state.json").is_file() else None
    if skeleton is None:
        raise FileNotFoundError(f"{checkpoint / 'state.json'}: missing from the checkpoint folder")
    tensors = read_tensors(checkpoint / "state.safetensors")
    try:
        return unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{checkpoint / 'state.json'}: does not match state.safetensors "
                              f"({type(e).__name__}: {e})") from None


# The published folder (`segzoo publish`, a URL, an `hf-hub:` repository): the weights, and a
# config.json holding the entry's fields (model arguments, classes, ..., the weights' sha256).
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PUBLISHED_FORMAT = "segzoo-published/1"
HF_PREFIX = "hf-hub:"  # a published folder in a Hugging Face Hub repository
HEX64 = re.compile(r"[0-9a-f]{64}")  # a sha256, as the formats write it


def read_config(path: Path, default_name: str, where: str | None = None) -> tuple[dict, dict]:
    """(model arguments, meta) of a published folder's config.json; meta carries the
    `weights_sha256` it names."""
    where = where or str(path)
    try:
        info = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{where}: expected a JSON object")
    fmt = info.get("format", PUBLISHED_FORMAT)
    if fmt != PUBLISHED_FORMAT:
        raise ValueError(f"{where}: format {fmt!r}, this version reads {PUBLISHED_FORMAT!r}")
    digest = info.get("weights_sha256")
    if not isinstance(digest, str) or not HEX64.fullmatch(digest):
        raise ValueError(f"{where}: key 'weights_sha256' must be the weights' sha256 (64 lowercase hex "
                         f"digits), got {digest!r}; publish the folder again with tools/publish.py")
    model, meta = model_and_meta(info, {"name": info.get("name", default_name)}, where)
    meta["weights_sha256"] = digest
    return model, meta


def model_and_meta(info: dict, meta: dict, where: str) -> tuple[dict, dict]:
    if not isinstance(info.get("model"), dict):
        raise ValueError(f"{where}: its metadata has no 'model' arguments")
    classes, palette = info.get("classes"), info.get("palette")
    if classes is not None:  # as an index entry is checked: the names label the model's channels
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{where}: key 'classes' must be a non-empty list of names, got {classes!r}")
        n = info["model"].get("num_classes")
        if n is not None and n != len(classes):
            raise ValueError(f"{where}: key 'model.num_classes' is {n} but 'classes' names {len(classes)}")
        if palette and len(palette) != len(classes):
            raise ValueError(f"{where}: key 'palette' has {len(palette)} colours for {len(classes)} classes")
    for key in ("classes", "palette", "mean", "std", "eval_protocol", "metrics", "dataset", "iteration",
                "recipe"):
        if key in info:
            meta[key] = info[key]
    return info["model"], meta
