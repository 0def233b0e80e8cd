"""What the report shows of one finished cell, measured from its run folder.

- val mIoU and per-class IoU, Boundary IoU and trimap mIoU: from `eval.json`
  (the final weights, the recipe's evaluation protocol; runs evaluated before
  boundary metrics existed have none).
- parameters and GFLOPs: `zoo.models.profile` at the size of the first val image
  after the val transform (one image, batch 1).
- training img/s: the median of the `img_s` rows of `metrics.jsonl`.
- inference latency: the median of `latency_runs` timed forwards of that
  image (batch 1, eval mode, after 3 warm-up passes), in milliseconds.
- checkerboard score (`decoders.artifacts`): the final logits of the first
  `checkerboard_images` val images, energies pooled over the images, at the
  stride of the architecture's last upsampling step (the scale of the last
  upsampler in the head: 2 for U-Net and DeconvNet, 8 for FCN-8s and for
  PSPNet at output stride 8), or 2 where the head has none.
- predictions of `num_images` val images spread evenly over the split (the
  same ones for every cell), with the images and labels as the model saw
  them, for the qualitative figure.

Each is a registered ablation measurement (`MEASUREMENTS`), whose description
the report lists. Another module adds one with `register_measurement(name,
description, measure)`: `measure(ctx)` gets a `MeasureContext` (the model,
recipe, val dataset, first val image, device, run folder) and returns a number
(or None), which lands in `extra[name]` and gets a column in the report.

Results are cached in `<run>/ablation.json` (+ `ablation_predictions.npz`),
keyed by the checkpoint, the settings and the added measurements, so
rebuilding a report is cheap.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decoders.artifacts import checkerboard_energy
from decoders.upsample import Upsampler
from zoo.common.fileio import atomic_write_json
from zoo.common.registry import Registry
from zoo.data import make_dataset
from zoo.engine.sources import load_source
from zoo.lab.timing import device_sync, median_ms
from zoo.models.profile import count_flops, count_params

CACHE, PREDICTIONS = "ablation.json", "ablation_predictions.npz"


@dataclass
class MeasureContext:
    """What a measurement gets for one finished cell."""
    run_dir: Path
    model: torch.nn.Module    # the final weights, eval mode, on `device`
    recipe: Any               # the cell's recipe (zoo.engine.recipe.Recipe)
    meta: dict                # classes, palette, ... of the checkpoint
    val: Any                  # the val dataset, val transforms applied
    image: torch.Tensor       # the first val image, (1, 3, H, W) on `device`
    device: torch.device


@dataclass(frozen=True)
class Measurement:
    description: str          # its line under "Measurements" in the report
    measure: Callable[[MeasureContext], float | None] | None = None  # None: built into measure_run
    label: str = ""           # its column header in the report's tables
    fmt: str = "{:.3g}"


MEASUREMENTS: Registry[Measurement] = Registry("ablation measurement")


def register_measurement(name: str, description: str, measure=None, *, label: str = "",
                         fmt: str = "{:.3g}", replace: bool = False) -> Measurement:
    """Add a measurement to every ablation report (see the module docstring)."""
    return MEASUREMENTS.register(name, Measurement(description, measure, label or name, fmt), replace=replace)


def added_measurements() -> list[tuple[str, Measurement]]:
    """The registered measurements that measure_run does not take itself, by name."""
    return [(n, m) for n, m in MEASUREMENTS.items() if m.measure is not None]


BUILT_IN = {
    "miou": "val mIoU: the final weights, from each run's `eval.json`; mean ± sample std over seeds.",
    "cost": "params and GFLOPs (1 multiply-add = 2 FLOPs): `zoo/models/profile.py` at the val image "
            "size, batch 1.",
    "train_speed": "train img/s: the median of the `img_s` rows of `metrics.jsonl` (wall-clock, "
                   "including data wait).",
    "latency": "latency: the median of timed forward passes of one val image (batch 1, eval mode, "
               "after 3 warm-up passes), on the measuring device below.",
    "boundary": "boundary IoU (Cheng et al. 2021): the IoU of each class's pixels within d of its mask's "
                "contour, d = 2% of the image diagonal (`zoo/engine/boundary.py`), averaged over classes; "
                "trimap mIoU: the mIoU of the pixels within 3 px of a ground-truth class boundary. Both "
                "from each run's `eval.json`, the same pass as its mIoU.",
    "checkerboard": "checkerboard: `decoders/artifacts.py` `checkerboard_score` of the final logits on the "
                    "first val images (energies pooled), at stride s = the scale of the head's last "
                    "upsampling step (2 where it has none): the share of the logits' energy near the "
                    "aliasing frequencies (k/s, l/s); lower is smoother. The checkerboard of a random "
                    "transposed convolution is ~0.75 on smooth input, bilinear ~0.0001.",
}
for _name, _text in BUILT_IN.items():
    register_measurement(_name, _text)


def measurement_lines() -> list[str]:
    """The report's "Measurements" list: the built-in ones in order, then the added ones."""
    return [MEASUREMENTS.get(n).description for n in BUILT_IN] + \
        [m.description for n, m in MEASUREMENTS.items() if n not in BUILT_IN]


def final_upsampling_factor(model) -> int:
    """The scale of the last upsampler (in module order) of the model's head, or 2."""
    head = getattr(model, "head", model)
    scales = [m.scale for m in head.modules() if isinstance(m, Upsampler) and m.scale > 1]
    return scales[-1] if scales else 2


def train_img_s(run_dir: Path) -> float | None:
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    speeds = [r["img_s"] for r in rows if "img_s" in r]
    return float(statistics.median(speeds)) if speeds else None


@torch.no_grad()
def latency_ms(model, x: torch.Tensor, runs: int = 10, warmup: int = 3) -> float:
    """Median wall time of one forward pass, in milliseconds."""
    return median_ms(lambda: model(x), runs, warmup, device_sync(x.device))


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included (video
    datasets list consecutive frames: the first k would show one scene)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def _finite(value):
    """A metric as JSON can hold it: None where it is missing or NaN (no class present)."""
    return None if value is None or value != value else float(value)


def _settings(cfg) -> dict:
    settings = {"version": 3, "num_images": cfg.num_images, "checkerboard_images": cfg.checkerboard_images,
                "latency_runs": cfg.latency_runs}
    added = [name for name, _ in added_measurements()]
    return {**settings, "measurements": added} if added else settings


def measure_run(run_dir: Path, cfg, device="cpu", *, force: bool = False) -> dict:
    """The report's numbers for one finished run folder (see the module docstring)."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "eval.json").read_text())
    cache = run_dir / CACHE
    key = {"checkpoint": result.get("checkpoint"), "settings": _settings(cfg),  # latencies are the device's
           "device": str(torch.device(device)), "threads": torch.get_num_threads()}
    if cache.is_file() and (run_dir / PREDICTIONS).is_file() and not force:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached

    device = torch.device(device)
    src = load_source(run_dir, pointer="last", device=device)
    model, meta, recipe = src.model, src.meta, src.recipe
    val = make_dataset(recipe.data, recipe.data.val_split, train=False)
    first = val[0]["image"][None].to(device)
    size = tuple(first.shape[-2:])
    stride = final_upsampling_factor(model)

    band = total = 0.0
    n_score = min(cfg.checkerboard_images, len(val))
    n_show = min(cfg.num_images, len(val))
    mean = np.asarray(recipe.data.mean, np.float32)
    std = np.asarray(recipe.data.std, np.float32)
    shown = spread(len(val), n_show)
    images, truths, preds, names = [], [], [], []
    with torch.no_grad():
        for i in sorted(set(range(n_score)) | set(shown)):
            sample = val[i]
            logits = model(sample["image"][None].to(device)).float()
            if i < n_score:
                b, t = checkerboard_energy(logits, stride)
                band, total = band + float(b.sum()), total + float(t.sum())
            if i in shown:
                image = sample["image"].permute(1, 2, 0).numpy() * std + mean
                images.append((image.clip(0, 1) * 255 + 0.5).astype(np.uint8))
                truths.append(sample["mask"].numpy().astype(np.uint8))
                preds.append(logits.argmax(1)[0].cpu().numpy().astype(np.uint8))
                names.append(sample["name"])
    arrays = {f"{k}_{i}": a for k, group in (("image", images), ("truth", truths), ("pred", preds))
              for i, a in enumerate(group)}
    np.savez_compressed(run_dir / PREDICTIONS, names=np.array(names), **arrays)

    out = {
        "key": key,
        "recipe": recipe.model | {"seed": recipe.train.seed},
        "classes": list(meta["classes"]),
        "palette": meta["palette"],
        "mIoU": result["mIoU"],
        "per_class_iou": result["per_class_iou"],
        "pixel_acc": result.get("pixel_acc"),
        "boundary_iou": _finite(result.get("boundary_iou")),
        "trimap_miou": _finite(result.get("trimap_miou")),
        "per_class_boundary_iou": result.get("per_class_boundary_iou"),
        "boundary_params": result.get("boundary_params"),
        "params": count_params(model),
        "gflops": count_flops(model, size) / 1e9,
        "input_size": list(size),
        "train_img_s": train_img_s(run_dir),
        "latency_ms": latency_ms(model, first, cfg.latency_runs),
        "latency_device": str(device),
        "threads": torch.get_num_threads(),
        "checkerboard": band / total if total > 0 else 0.0,
        "checkerboard_stride": stride,
        "checkerboard_images": n_score,
        "upsampling": model.upsampling() if hasattr(model, "upsampling") else [],
    }
    added = added_measurements()
    if added:
        ctx = MeasureContext(run_dir, model, recipe, meta, val, first, device)
        out["extra"] = {name: _finite(m.measure(ctx)) for name, m in added}
    atomic_write_json(cache, out)
    return out


def load_predictions(run_dir: Path) -> dict:
    """{"names": [...], "image": [(H, W, 3) uint8], "truth": [(H, W)], "pred": [(H, W)]}."""
    with np.load(Path(run_dir) / PREDICTIONS) as f:
        names = [str(n) for n in f["names"]]
        out = {"names": names}
        for k in ("image", "truth", "pred"):
            out[k] = [f[f"{k}_{i}"] for i in range(len(names))]
    return out
