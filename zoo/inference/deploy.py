"""Deployment on CPU with ONNX Runtime: a trained model's exported file in place of the eager one.

An exported file carries what a user needs to feed it (`deploy_info`): the
preprocessing (RGB, /255, mean, std, the recipe's validation transforms, the
evaluation protocol and its scale), the classes and palette, the model's
arguments and the weights' sha256, both in the ONNX file's `metadata_props`
(key `segzoo`, plus flat keys) and as `<name>.json` beside it; its input and
output dimensions are named batch, height, width (`stamp`).

`runtime_model(src)` exports a loaded source (zoo/engine/sources.py) once, caches the
file beside the weights under their sha256 (a zoo entry's in the segzoo cache,
where downloaded entries live), and returns an `OrtModel`: an `nn.Module` whose
forward is an ONNX Runtime session, so `predict_logits`, `evaluate` and
`zoo.Predictor` run it under the model's own protocol (scales, windows, flip)
unchanged. A model that does not export with dynamic height and width
(PSPNet's adaptive pooling to 2, 3 and 6 bins) is exported at each input size
it meets. int8 (zoo/inference/quantize.py) is its own file, chosen only when asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.data.base import IMAGENET_MEAN, IMAGENET_STD
from zoo.hub.download import cache_dir, sha256_of
from zoo.hub.formats import resolve_run
from zoo.hub.load import ENTRIES, local_weights
from zoo.inference import export as export_mod  # a module: tests patch export_model
from zoo.inference.export import Logits
from zoo.inference.quantize import calibration_source, quantize_int8

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
FORMAT = "segzoo-onnx/1"
DIM_NAMES = {0: "batch", 2: "height", 3: "width"}
# Trained logits reach tens; fp32 kernels that sum in another order differ by ~1e-5 of that.
RUNTIME_ATOL = 1e-3


def check_choice(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"{what} {value!r}: valid: {', '.join(valid)}")
    return value


# ----------------------------------------------------------------------------- metadata

def deploy_info(meta: dict, recipe=None, config: dict | None = None, sha256: str | None = None) -> dict:
    """What an exported file's user needs: how to turn a frame into the input, what the
    output's channels are, and which weights it came from."""
    data = recipe.data if recipe is not None else None
    mean = list(data.mean if data is not None else meta.get("mean", IMAGENET_MEAN))
    std = list(data.std if data is not None else meta.get("std", IMAGENET_STD))
    protocol = dict(meta.get("eval_protocol") or {})
    entries = (data.val_transforms if data is not None else None) or []
    transforms = [t.model_dump() if hasattr(t, "model_dump") else t for t in entries]
    return {
        "format": FORMAT,
        "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "color": "RGB",
                  "preprocess": "x = (rgb_uint8 / 255 - mean) / std, after the val transforms, "
                                "then resized (bilinear) by each eval scale",
                  "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                  "val_transforms": transforms},
        "output": {"name": "logits", "layout": "NCHW",
                   "postprocess": "resize (bilinear) to the frame, argmax over classes"},
        "eval_protocol": protocol,
        "eval_scales": list(protocol.get("scales") or [1.0]),
        "classes": list(meta.get("classes") or []),
        "palette": [list(map(int, c)) for c in meta.get("palette") or []],
        "model": dict(config or {}),
        "weights_sha256": sha256 or meta.get("sha256"),
        "source": meta.get("name") or meta.get("source"),
    }


def eval_input_size(source) -> tuple[int, int] | None:
    """The input an entry's model sees under its protocol (`Entry.input_size`); None for
    any other source."""
    entry = ENTRIES.get(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
    return entry.input_size if entry else None


def stamp(path: Path, info: dict) -> Path:
    """Write `info` into the ONNX file's metadata and as `<stem>.json` beside it, and name
    the dynamic dimensions of its input and output batch, height and width."""
    import onnx
    model = onnx.load(str(path))
    graph = model.graph
    renames = {}
    for value in list(graph.input[:1]) + list(graph.output[:1]):
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and i in DIM_NAMES:
                renames.setdefault(dim.dim_param, DIM_NAMES[i])
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
    del model.metadata_props[:]
    flat = {"segzoo": info, "classes": info["classes"], "mean": info["input"]["mean"],
            "std": info["input"]["std"], "eval_protocol": info["eval_protocol"],
            "weights_sha256": info["weights_sha256"]}
    for key, value in flat.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return path


def read_info(path) -> dict:
    """The `segzoo` metadata an exported file carries ({} for a file from elsewhere)."""
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["segzoo"]) if "segzoo" in props else {}


# ----------------------------------------------------------------------------- sessions

def session(path, threads: int | None = None):
    """An ONNX Runtime CPU session on `threads` intra-op threads (default: torch's count)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel(nn.Module):
    """ONNX Runtime in the eager model's place: an (N, 3, H, W) tensor in, logits out.
    Sessions are made per input size on first use (see `Deployment.file_for`)."""

    def __init__(self, deployment: Deployment):
        super().__init__()
        self.deployment = deployment
        self.config = dict(deployment.config)
        self.meta = dict(deployment.meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self.deployment.session_for(tuple(x.shape[-2:]))
        out = run.run(None, {run.get_inputs()[0].name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class Deployment:
    """One model's exported files in one cache folder: fp32 (dynamic sizes where the model
    exports so, else one per size) and int8 beside each, made on first use."""

    def __init__(self, model: nn.Module, info: dict, folder: Path, key: str, *, precision: str = "fp32",
                 threads: int | None = None, calibration=None):
        self.model = model.eval()
        self.info, self.folder, self.key = info, Path(folder), key
        self.precision = check_choice(precision, PRECISIONS, "precision")
        self.threads, self.calibration = threads, calibration
        self.config = dict(getattr(model, "config", {}) or {})
        self.meta = dict(getattr(model, "meta", {}) or {})
        self._sessions: dict[Path, object] = {}
        self._checked: set[Path] = set()  # cached files found to match the eager model here
        self.files: list[Path] = []  # the files used, in order of first use

    def session_for(self, size: tuple[int, int]):
        path = self.file_for(size)
        if path not in self._sessions:
            self._sessions[path] = session(path, self.threads)
        return self._sessions[path]

    def file_for(self, size: tuple[int, int]) -> Path:
        fp32 = self._fp32_for(size)
        if fp32 not in self._checked:
            self._checked.add(fp32)
            if not self._agrees(fp32, size):  # made by other code (an older checkout): made again
                for stale in self.folder.glob(fp32.name.replace(".fp32", ".*").replace(".onnx", ".*")):
                    stale.unlink()
                fp32 = self._fp32_for(size)
        path = fp32 if self.precision == "fp32" else fp32.with_name(fp32.name.replace(".fp32", ".int8"))
        if not path.is_file():
            if self.calibration is None:
                raise ValueError("int8 needs calibration frames from the training split, and none were given")
            with _staging(self.folder) as tmp:
                quantize_int8(fp32, tmp / path.name, self.calibration(size))
                stamp(tmp / path.name, {**self.info, "precision": "int8", "size": _size_of(fp32)})
                _publish(tmp, path)
        if path not in self.files:
            self.files.append(path)
        return path

    def _agrees(self, path: Path, size) -> bool:
        """Whether a cached file still computes what the eager model does: the weights fix the
        cache key, but not the code that the file was exported from."""
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = Logits(self.model)(x).numpy()
        run = session(path, self.threads)
        out = run.run(None, {run.get_inputs()[0].name: x.numpy()})[0]
        return out.shape == ref.shape and float(np.abs(out - ref).max()) <= RUNTIME_ATOL

    def _fp32_for(self, size) -> Path:
        dynamic = self.folder / f"{self.key}.fp32.onnx"
        record = self._export(dynamic, size, dynamic=True)
        checked = record.get("max_abs_diff", {}).get(f"{size[0]}x{size[1]}")
        if record.get("ok") and (record.get("any_size") or (checked is not None and checked <= RUNTIME_ATOL)):
            return dynamic  # valid at any size, or checked at this one
        static = self.folder / f"{self.key}.fp32.{size[0]}x{size[1]}.onnx"
        record = self._export(static, size, dynamic=False)
        if not record.get("ok"):
            raise RuntimeError(f"{self.info.get('source')}: ONNX export failed at {size[0]}x{size[1]}: "
                               f"{record.get('reason')}")
        return static

    def _export(self, path: Path, size, dynamic: bool) -> dict:
        """The export record (read back from the JSON beside `path`, or made now)."""
        record = _read_json(path.with_suffix(".json")).get("export")
        if record is not None and (path.is_file() or not record["ok"]):
            return record
        with _staging(self.folder) as tmp:
            report = export_mod.export_model(self.model, tmp, formats=("onnx",), size=size, dynamic=dynamic,
                                             atol=RUNTIME_ATOL, name=path.stem)["onnx"]
            record = {k: report[k] for k in ("ok", "exporter", "dynamic", "any_size", "max_abs_diff",
                                             "reason", "limit")}
            info = {**self.info, "precision": "fp32", "size": None if dynamic else list(size),
                    "export": record}
            if report["ok"]:
                stamp(tmp / path.name, info)
            else:  # remembered, so the next run goes straight to fixed sizes
                (tmp / f"{path.stem}.json").write_text(json.dumps(info, indent=1) + "\n")
            _publish(tmp, path)
        return record


def _size_of(path: Path):
    name = path.stem.split(".")[-1]
    return [int(v) for v in name.split("x")] if "x" in name else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _staging:
    """A temporary folder inside `folder`: files appear in the cache whole or not at all."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def __enter__(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=self.folder))
        return self.tmp

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)


def _publish(tmp: Path, path: Path) -> None:
    """Move the `.onnx` and `.json` named like `path` from `tmp` into place."""
    for suffix in (".onnx", ".json"):
        made = tmp / path.with_suffix(suffix).name
        if made.is_file():
            os.replace(made, path.with_suffix(suffix))


# ----------------------------------------------------------------------------- cache

def cache_place(src, source, pointer: str = "best") -> tuple[Path, str, str]:
    """(folder, key, sha256 of the weights): beside the source's weights, keyed by their
    sha256 and the model's arguments (a logit bias changes the file, not the weights)."""
    bias = getattr(src.model, "logit_bias", None)  # set apart from the config by a calibration
    arguments = {**(getattr(src.model, "config", {}) or {}),
                 "logit_bias": None if bias is None else [round(float(b), 6) for b in bias]}
    args = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()[:8]
    text = None if isinstance(source, nn.Module) else os.fspath(source)
    if text in ENTRIES:
        entry = ENTRIES[text]
        return cache_dir() / "entries" / entry.name, f"model.{entry.sha256[:16]}-{args}", entry.sha256
    weights = None
    if text is not None:
        try:  # a run's best checkpoint, a checkpoint folder, a published folder, a file
            weights = local_weights(text)
        except FileNotFoundError:
            weights = None
        if weights is not None and pointer != "best" and (Path(text) / "checkpoints").is_dir():
            weights = resolve_run(Path(text), pointer) / "model.safetensors"
    if weights is not None and weights.is_file() and os.access(weights.parent, os.W_OK):
        sha = sha256_of(weights)
        return weights.parent, f"{weights.stem}.{sha[:16]}-{args}", sha
    from safetensors.torch import save  # a model object, or weights in a folder not ours to write
    state = {k: v.detach().cpu().contiguous() for k, v in src.model.state_dict().items()}
    sha = hashlib.sha256(save(state)).hexdigest()
    return cache_dir() / "onnx", f"model.{sha[:16]}-{args}", sha


def runtime_model(src, source=None, *, precision: str = "fp32", threads: int | None = None,
                  data_root: str | None = None, pointer: str = "best", cache: Path | None = None) -> OrtModel:
    """The source's model run by ONNX Runtime on CPU, exported on first use and cached
    (see the module docstring). int8 calibrates on frames of the recipe's training split
    (`data_root` replaces its data.root)."""
    check_choice(precision, PRECISIONS, "precision")
    folder, key, sha = cache_place(src, source if source is not None else src.model, pointer)
    info = deploy_info(src.meta, src.recipe, getattr(src.model, "config", None), sha)
    calibration = None
    if precision == "int8":
        calibration = calibration_source(src, source, data_root)
    model = src.model.to("cpu").eval()
    return OrtModel(Deployment(model, info, Path(cache or folder), key, precision=precision,
                               threads=threads, calibration=calibration))


def backend_model(src, source=None, *, backend: str = "torch", precision: str = "fp32", **options) -> nn.Module:
    """The model a tool runs: the eager one (`torch`), or ONNX Runtime's (`runtime_model`)."""
    check_choice(backend, BACKENDS, "backend")
    check_choice(precision, PRECISIONS, "precision")
    if backend == "torch":
        if precision != "fp32":
            raise ValueError(f"precision {precision!r} runs on ONNX Runtime only: add --backend onnxruntime "
                             "(PyTorch eager runs fp32)")
        if options.get("threads"):  # eager's own thread count
            torch.set_num_threads(int(options["threads"]))
        return src.model
    return runtime_model(src, source, precision=precision, **options)


def runtime_device(backend: str, device):
    """ONNX Runtime runs here on the CPU: `auto` means cpu for it, and a GPU is refused."""
    if backend != "onnxruntime":
        return device
    if str(device) not in ("auto", "cpu"):
        raise ValueError(f"--device {device}: --backend onnxruntime runs on the CPU; use --device cpu")
    return "cpu"
