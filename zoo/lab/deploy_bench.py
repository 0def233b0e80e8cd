"""`segzoo benchmark --deploy`: PyTorch eager against ONNX Runtime fp32 and int8 on zoo entries.

For each entry, at each thread count, in one process:

- latency: the model alone on inputs at the entry's eval size (val frames after
  the val transforms and the eval scale), the backends taking turns frame by
  frame, so that load on a shared machine falls on all of them alike; median and
  p90 per backend, and the speedup of each median over eager's;
- quality, once per entry: every val frame predicted under the entry's protocol
  by each backend, masks at the frame's size: the fraction of pixels whose class
  agrees with eager's mask, and val mIoU from each backend's confusion matrix.

Targets: fp32 at least 1.5x eager with 99.9% of pixels agreeing;
int8 at least 2.5x with val mIoU within 0.01 of fp32's. `format_table` marks each.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zoo.common.machine import machine_info
from zoo.data import make_dataset
from zoo.engine.evaluate import predict_logits, protocol_args
from zoo.engine.metrics import ConfusionMatrix
from zoo.engine.sources import load_source, require_recipe
from zoo.hub.load import ENTRIES
from zoo.inference.deploy import runtime_model
from zoo.inference.quantize import model_inputs
from zoo.lab.timing import time_steps

BACKENDS = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))
TARGETS = {"fp32": {"speedup": 1.5, "agreement": 0.999}, "int8": {"speedup": 2.5, "miou_drop": 0.01}}


def _val(src, data_root):
    recipe = require_recipe(src, src.meta.get("name"), "the deployment benchmark (its val split)")
    data = recipe.data if data_root is None else recipe.data.model_copy(update={"root": data_root})
    return make_dataset(data, data.val_split, train=False)


def _models(src, name, threads, data_root, backends=BACKENDS) -> dict:
    models = {}
    for backend, precision in backends:
        key = f"{backend} {precision}"
        models[key] = src.model if backend == "torch" else runtime_model(
            src, name, precision=precision, threads=threads, data_root=data_root)
    return models


@torch.no_grad()
def quality(models: dict, dataset, protocol: dict, num_classes: int, max_images=None) -> dict:
    """Per backend: val mIoU, and the fraction of mask pixels agreeing with the first backend's."""
    matrices = {k: ConfusionMatrix(num_classes, dataset.ignore_index) for k in models}
    agree = {k: 0 for k in models}
    pixels = 0
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    reference = next(iter(models))
    for i in range(n):
        sample = dataset[i]
        image, mask = sample["image"][None], torch.as_tensor(sample["mask"])[None]
        preds = {}
        for key, model in models.items():
            scores = predict_logits(model, image, num_classes=num_classes, **protocol_args(protocol))
            scores = torch.nn.functional.interpolate(scores.float(), size=tuple(mask.shape[-2:]),
                                                     mode="bilinear", align_corners=False)
            preds[key] = scores.argmax(1)
            matrices[key].update(preds[key], mask)
        for key in models:
            agree[key] += int((preds[key] == preds[reference]).sum())
        pixels += preds[reference].numel()
    return {k: {"mIoU": float(matrices[k].compute()["mIoU"]), "agreement": agree[k] / pixels,
                "images": n} for k in models}


@torch.no_grad()
def latency(models: dict, inputs: list, rounds: int = 2, warmup: int = 2) -> dict:
    """Per backend: median and p90 milliseconds of one forward, backends taking turns."""
    times = {k: [] for k in models}
    for x in inputs[:warmup]:
        for model in models.values():
            model(x)
    for _ in range(rounds):
        for x in inputs:
            for key, model in models.items():
                times[key] += time_steps(lambda: model(x), 1)
    return {k: {"median_ms": 1000 * float(np.median(v)), "p90_ms": 1000 * float(np.percentile(v, 90)),
                "samples": len(v)} for k, v in times.items()}


def benchmark_entry(name: str, *, threads=(1, 2), data_root=None, max_images=None, timed_frames: int = 10,
                    rounds: int = 2, log=print) -> list[dict]:
    """One row per (thread count, backend): see the module docstring."""
    src = load_source(name, device="cpu")
    dataset = _val(src, data_root)
    protocol = dict(src.meta.get("eval_protocol") or {})
    num_classes = len(src.meta["classes"])
    picks = np.linspace(0, len(dataset) - 1, min(timed_frames, len(dataset))).round().astype(int)
    inputs = [torch.from_numpy(x) for x in
              model_inputs([dataset[int(i)]["image"] for i in picks], protocol, num_classes)]
    rows, scores, before = [], None, torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            models = _models(src, name, t, data_root)
            if scores is None:  # thread counts change speed, not masks
                log(f"{name}: quality on val ({max_images or 'all'} frames)")
                scores = quality(models, dataset, protocol, num_classes, max_images)
            log(f"{name}: latency at {t} thread(s)")
            speed = latency(models, inputs, rounds)
            eager = speed["torch fp32"]["median_ms"]
            for key in models:
                backend, precision = key.split()
                rows.append({"entry": name, "input": list(inputs[0].shape[-2:]), "threads": t,
                             "backend": backend, "precision": precision, **speed[key],
                             "speedup": eager / speed[key]["median_ms"], **scores[key]})
    finally:
        torch.set_num_threads(before)  # the caller's count, not the last one timed
    return rows


def check_targets(rows: list[dict]) -> list[dict]:
    """Each ONNX Runtime row gets `target` (the issue's numbers) and `met`."""
    fp32 = {(r["entry"], r["threads"]): r for r in rows if r["backend"] == "onnxruntime"
            and r["precision"] == "fp32"}
    for r in rows:
        if r["backend"] != "onnxruntime":
            continue
        goal = TARGETS[r["precision"]]
        if r["precision"] == "fp32":
            r["met"] = r["speedup"] >= goal["speedup"] and r["agreement"] >= goal["agreement"]
            r["target"] = f">= {goal['speedup']}x, >= {goal['agreement']:.1%} agreement"
        else:
            drop = fp32[(r["entry"], r["threads"])]["mIoU"] - r["mIoU"]
            r["met"] = r["speedup"] >= goal["speedup"] and drop <= goal["miou_drop"]
            r["target"] = f">= {goal['speedup']}x, mIoU within {goal['miou_drop']} of fp32"
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| entry | input | threads | backend | median ms | p90 ms | speedup | pixel agreement "
             "| val mIoU | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if "met" not in r else ("met" if r["met"] else "**missed**")
        lines.append(f"| {r['entry']} | {r['input'][0]}x{r['input'][1]} | {r['threads']} | "
                     f"{r['backend']} {r['precision']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['agreement']:.4%} | {r['mIoU']:.4f} | {met} |")
    return "\n".join(lines)


def run(entries, *, json_path=None, log=print, **options) -> list[dict]:
    """`segzoo benchmark --deploy`: every entry's rows, the table printed, JSON written."""
    import onnxruntime

    names = sorted(ENTRIES) if list(entries) == ["all"] else list(entries)
    rows = []
    for name in names:
        rows += benchmark_entry(name, log=log, **options)
    check_targets(rows)
    log(format_table(rows))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        meta = {**machine_info(), "onnxruntime": onnxruntime.__version__,
                "options": {k: v for k, v in options.items()}}
        Path(json_path).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
        log(f"wrote {json_path}")
    return rows
