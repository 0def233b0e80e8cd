"""Export zoo models to ONNX and `torch.export` programs, with parity checks.

`export_model(model, out_dir)` writes, per format, one file with dynamic
batch, height and width, and runs it against the eager model at three sizes:

1. the export size (64 x 64 by default), batch 2 (the example batch: 2, as
   exporters specialise dimensions of size 1),
2. a second, different size (export size + (32, 64): still multiples of 32),
   batch 1, which proves the dimensions really are dynamic: a format is `ok`
   only if both match the eager model within `atol` (max absolute difference),
3. an odd size (export size + (33, 67)), which zoo models accept in eager mode
   (ceil-division bookkeeping, crops): a program that took a shape-dependent
   Python branch at export time fails here. The result goes into `any_size`
   and, when it fails, `limit` says why; it does not make the format fail.

Formats:

- `torch_export`: `torch.export.export` with `Dim.DYNAMIC` height and width,
  non-strict tracing first, then strict (TorchDynamo) tracing; saved with
  `torch.export.save` (`<name>.pt2`), loaded back and run.
- `onnx`: the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`)
  on that exported program; if it fails or misses parity, the TorchScript-based
  exporter (`dynamo=False`, `dynamic_axes`). Checked under onnxruntime; the
  first exporter that passes is kept (`<name>.onnx`).

Nothing raises: every failure becomes a one-line reason per attempt, so a
model that cannot be exported is a row in the table. `export_grid` runs every
architecture x upsampler on a tiny encoder; `format_table` prints Markdown.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from decoders.upsample import UPSAMPLERS
from zoo import factory
from zoo.models import registry
from zoo.models.registry import MODELS

FORMATS = ("onnx", "torch_export")
class Logits(nn.Module):
    """The model with one tensor in and the logits out (no aux flag, no tuple)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


_NOISE = (
    (re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : (Non-zero status code returned while running )?"), ""),
    (re.compile(r"/\S+\.(h|cc|cpp):\d+ "), ""),            # onnxruntime source locations
    (re.compile(r"\. If you're using .*"), "."),             # torch.export's generic advice
)


def short_reason(e: BaseException, limit: int = 240) -> str:
    """`Type: the line that says what went wrong`, at most `limit` characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # The ONNX exporter ends with an exception summary ("<class 'X'>: message",
    # innermost first); torch.export lists violations as "- ..." lines.
    summary = [ln.split(">:", 1)[-1].strip() for ln in lines if ln.startswith("<class")]
    if summary:
        useful = summary[0]
        op = next((m.group(1) for ln in summary for m in [re.search(r"operator '([^']+)'", ln)] if m), None)
        useful += f" (ONNX operator {op})" if op else ""
    else:
        useful = next((ln[2:] for ln in lines if ln.startswith("- ")), lines[0] if lines else "")
    for pattern, repl in _NOISE:
        useful = pattern.sub(repl, useful)
    text = f"{type(e).__name__}: {useful}" if useful else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_sizes(size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(second size, odd size) for an export size."""
    return (size[0] + 32, size[1] + 64), (size[0] + 33, size[1] + 67)


def _compare(run, model: nn.Module, sizes, atol: float, seed: int = 0) -> tuple[dict, dict]:
    """Per (batch, h, w) in `sizes`, keyed "HxW": max |run(x) - model(x)| and,
    where it fails, why."""
    gen = torch.Generator().manual_seed(seed)
    diffs, errors = {}, {}
    for n, h, w in sizes:
        key = f"{h}x{w}"
        x = torch.randn(n, 3, h, w, generator=gen)
        try:
            with torch.no_grad():
                ref = model(x)
                out = torch.as_tensor(run(x))
        except Exception as e:  # a guard or a runtime shape error: a reason
            errors[key] = f"at {key}: {short_reason(e)}"
            continue
        if out.shape != ref.shape:
            errors[key] = f"at {key}: output shape {tuple(out.shape)}, eager gives {tuple(ref.shape)}"
            continue
        diffs[key] = float((out.float() - ref.float()).abs().max())
        if not diffs[key] <= atol:
            errors[key] = f"at {key}: max |diff| {diffs[key]:.3g} > {atol:g}"
    return diffs, errors


def trace_program(model: nn.Module, x: Tensor, dynamic: bool = True):
    """(program, how, failed attempts): `torch.export` non-strict, then strict."""
    from torch.export import Dim
    dim = Dim.DYNAMIC if dynamic else Dim.STATIC
    shapes = ({0: dim, 2: dim, 3: dim},)
    attempts = []
    for strict in (False, True):
        how = "strict" if strict else "non-strict"
        try:
            return torch.export.export(model, (x,), dynamic_shapes=shapes, strict=strict), how, attempts
        except Exception as e:  # any exporter failure is a reason, not a crash
            attempts.append(f"torch.export {how}: {short_reason(e)}")
    return None, None, attempts


def _onnx_dynamo(model, program, x, path: Path):
    if program is None:
        raise RuntimeError("no torch.export program to translate")
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.5 * 2**30
    torch.onnx.export(program, (x,), str(path), dynamo=True, external_data=big,
                      input_names=["image"], output_names=["logits"], verbose=False)


def _onnx_torchscript(model, program, x, path: Path):
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "logits")}
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes=axes)


def _onnx_runner(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions, not as console noise
    options.intra_op_num_threads = 1  # parity checks on small inputs; no spinning thread pool
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines and tracer warnings; the report says what matters.
    The TorchScript exporter's C++ side prints whole graphs when it fails, past Python's
    sys.stdout and sys.stderr: their file descriptors are silenced too."""
    with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
          contextlib.redirect_stderr(io.StringIO()), _silent_fd(1), _silent_fd(2)):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _silent_fd(fd: int):
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (an embedded interpreter): nothing to silence
        yield
        return
    for stream in (sys.__stdout__, sys.__stderr__):  # what was written before stays visible
        if stream is not None:
            stream.flush()
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def export_model(model: nn.Module, out_dir, formats=FORMATS, size=(64, 64), dynamic: bool = True,
                 check_size=None, odd_size=None, atol: float = 1e-4,
                 name: str = "model") -> dict[str, dict]:
    """Export `model` (left in eval mode) under `out_dir`; one report per format:

        {ok, path, exporter, dynamic, any_size, max_abs_diff: {"HxW": d}, parity,
         reason, limit, attempts, seconds}

    `parity` is the largest difference over the required sizes, `reason` says
    why a format failed, `limit` why it is not valid at the odd size,
    `attempts` lists every failed try. `dynamic=False` exports and checks the
    export size only, at batch 1."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(FORMATS)}")
    size = (int(size[0]), int(size[1]))
    second, odd = check_sizes(size)
    batch = 2 if dynamic else 1
    required = [(batch, *size)] + ([(1, *(check_size or second))] if dynamic else [])
    probe = [(1, *(odd_size or odd))] if dynamic else []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped = Logits(model).eval()
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
    with _quiet():
        t0 = time.perf_counter()
        program, how, attempts = trace_program(wrapped, x, dynamic)
        trace_s = time.perf_counter() - t0
        reports = {}
        if "torch_export" in formats:
            reports["torch_export"] = _export_program(program, how, attempts, wrapped, required, probe,
                                                      out_dir / f"{name}.pt2", atol, trace_s)
        if "onnx" in formats:
            reports["onnx"] = _export_onnx(program, attempts, wrapped, x, required, probe,
                                           out_dir / f"{name}.onnx", atol)
    return reports


def _failed(reason: str, attempts=(), diffs=None, seconds=0.0) -> dict:
    return {"ok": False, "path": None, "exporter": None, "dynamic": False, "any_size": False,
            "max_abs_diff": diffs or {}, "parity": None, "reason": reason, "limit": None,
            "attempts": list(attempts), "seconds": round(seconds, 2)}


def _checked(run, model, required, probe, atol):
    """(diffs, reason the required sizes fail or None, limit at the probe size or None)."""
    diffs, errors = _compare(run, model, required + probe, atol)
    keys = [f"{h}x{w}" for _, h, w in required]
    reason = "; ".join(errors[k] for k in keys if k in errors) or None
    limit = "; ".join(v for k, v in errors.items() if k not in keys) or None
    return diffs, reason, limit


def _passed(path, exporter, diffs, limit, attempts, seconds, required, probe) -> dict:
    parity = max(diffs[f"{h}x{w}"] for _, h, w in required)
    return {"ok": True, "path": str(path), "exporter": exporter, "dynamic": len(required) > 1,
            "any_size": bool(probe) and limit is None, "max_abs_diff": diffs, "parity": parity,
            "reason": None,
            "limit": limit, "attempts": list(attempts), "seconds": round(seconds, 2)}


def _export_program(program, how, attempts, model, required, probe, path: Path, atol, trace_s):
    t0 = time.perf_counter()
    if program is None:
        return _failed(attempts[-1], attempts, seconds=trace_s)
    try:
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    except Exception as e:
        path.unlink(missing_ok=True)
        reason = f"torch.export {how} save/load: {short_reason(e)}"
        return _failed(reason, attempts + [reason], seconds=trace_s + time.perf_counter() - t0)
    diffs, reason, limit = _checked(loaded, model, required, probe, atol)
    seconds = trace_s + time.perf_counter() - t0
    if reason:
        path.unlink(missing_ok=True)
        reason = f"torch.export {how}: {reason}"
        return _failed(reason, attempts + [reason], diffs, seconds)
    return _passed(path, f"torch.export {how}", diffs, limit, attempts, seconds, required, probe)


def _export_onnx(program, trace_attempts, model, x, required, probe, path: Path, atol):
    attempts, fallback = [], None
    t0 = time.perf_counter()
    for exporter, export in (("dynamo", _onnx_dynamo), ("torchscript", _onnx_torchscript)):
        try:
            export(model, program, x, path)
            run = _onnx_runner(path)
        except Exception as e:
            detail = trace_attempts[-1] if exporter == "dynamo" and program is None else short_reason(e)
            attempts.append(f"onnx {exporter}: {detail}")
            continue
        diffs, reason, limit = _checked(run, model, required, probe, atol)
        if reason:
            attempts.append(f"onnx {exporter}: {reason}")
            continue
        result = (exporter, diffs, limit)
        if limit is None:
            return _passed(path, exporter, diffs, None, attempts, time.perf_counter() - t0, required, probe)
        # Valid at the required sizes only: keep it unless the next exporter does better.
        fallback = fallback or (result, path.read_bytes())
        attempts.append(f"onnx {exporter}: {limit}")
    if fallback:
        (exporter, diffs, limit), data = fallback
        path.write_bytes(data)
        return _passed(path, exporter, diffs, limit, attempts, time.perf_counter() - t0, required, probe)
    path.unlink(missing_ok=True)
    return _failed("; ".join(attempts), attempts, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- grid

def exportable_architectures() -> list[str]:
    """Registered architecture builders (not presets or zoo entries)."""
    return registry.architectures(presets=False)


def tiny_args(arch: str) -> dict:
    """The small head widths `arch` declares at registration: the grid checks exportability,
    not capacity."""
    return dict(MODELS.info(arch).get("tiny") or {})


def export_grid(out_dir, encoder: str = "test_resnet", archs=None, upsamplers=None,
                formats=FORMATS, size=(64, 64), num_classes: int = 5, log=print, model_args=None,
                **options) -> list[dict]:
    """Export every architecture x upsampler (tiny heads, changed by `model_args`); one row per
    pair. `options` go to `export_model` (dynamic, check_size, odd_size, atol)."""
    rows = []
    for arch in archs or exportable_architectures():
        for up in upsamplers or list(UPSAMPLERS):
            row = {"arch": arch, "encoder": encoder, "upsample": up}
            try:
                model = factory.create(arch, **{"encoder": encoder, "upsample": up, "num_classes": num_classes,
                                                **tiny_args(arch), **(model_args or {})})
            except Exception as e:
                row.update({f: _failed(f"build: {short_reason(e)}") for f in formats})
            else:
                row.update(export_model(model, Path(out_dir) / f"{arch}_{up}", formats, size, **options))
            rows.append(row)
            log(f"{arch}/{up}: " + ", ".join(f"{f} {_status(row[f])}" for f in formats))
    return rows


def _status(r: dict) -> str:
    if not r["ok"]:
        return "failed"
    return "ok, any size" if r["any_size"] else "ok, not at odd sizes" if r["dynamic"] else "ok"


def format_table(rows: list[dict], formats=FORMATS) -> str:
    """Markdown, one line per (arch, upsampler): per format the status, exporter,
    worst parity difference, and the reason or the odd-size limit."""
    def cell(r):
        if not r["ok"]:
            return "**failed**: " + r["reason"].replace("|", "\\|")
        text = f"{_status(r)} ({r['exporter']}, max diff {r['parity']:.0e})"
        return text + (": " + r["limit"].replace("|", "\\|") if r["limit"] else "")

    lines = ["| arch | upsample | " + " | ".join(formats) + " |", "|---|---|" + "---|" * len(formats)]
    for row in rows:
        lines.append(f"| {row['arch']} | {row['upsample']} | "
                     + " | ".join(cell(row[f]) for f in formats) + " |")
    return "\n".join(lines)
