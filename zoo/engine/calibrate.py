"""Undo the class prior that class-weighted training builds into a model.

Cross-entropy with class weights `w` learns scores whose softmax leans toward
`w_c * p(c | x)`, so the argmax over-predicts the up-weighted classes (the CamVid
U-Net entry, trained with median-frequency weights, marks 2.8x as many pixels
"pole" as there are). Adding `b_c = -alpha * log(w_c)` to the logits moves the
decision back: alpha = 1 undoes the weighting exactly (logit adjustment, Menon et
al., ICLR 2021), alpha = 0 keeps it, and mIoU, which rewards rare classes' recall
as well as their precision, usually peaks in between.

`calibrate` measures mIoU for a grid of alphas on one split, under the protocol
stored with the weights, and keeps the best. Undoing the prior hands pixels back to
the frequent classes, so a thin class (pole, sign) can fall towards zero while mIoU
rises; `max_class_drop` keeps only the alphas under which no class loses more than that
much IoU against the uncalibrated model (alpha 0), for an entry judged on its worst class.

The default split is the training split, so that the val figures measured
afterwards (`segzoo eval RUN --calibration RUN/calibration.json`) stay a check the
choice never saw. The bias is part of the model's config (`zoo.create(..., logit_bias=[...])`), not of its
weights; `segzoo publish --ship` ships the bias of the evaluation it ships.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from zoo.common.fileio import atomic_write_json
from zoo.data import make_dataset
from zoo.engine.data import spread
from zoo.engine.distributed import device_for
from zoo.engine.evaluate import evaluate, protocol_args, stored_protocol
from zoo.engine.losses import class_weights
from zoo.engine.sources import load_source, require_recipe

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FILE = "calibration.json"


def prior_bias(weights: Sequence[float], alpha: float) -> list[float]:
    """`-alpha * log(w_c)` per class; weights must be positive."""
    bad = [(i, w) for i, w in enumerate(weights) if not w > 0]
    if bad:
        raise ValueError(f"class weights must be positive to undo them (train.class_weights); class "
                         f"{bad[0][0]} has {bad[0][1]!r}")
    return [-alpha * math.log(float(w)) + 0.0 for w in weights]  # + 0.0 turns -0.0 into 0.0




def choose_alpha(rows: Sequence[dict], max_class_drop: float | None = None) -> tuple[dict, dict]:
    """(the chosen row, {alpha: why it was ruled out}) of `calibrate`'s rows: the best mIoU (ties:
    the smaller alpha) among the alphas whose per-class IoU stays within `max_class_drop` of alpha
    0's for every class (None: all alphas qualify)."""
    ruled_out = {}
    if max_class_drop is not None:
        base = next((row for row in rows if row["alpha"] == 0.0), None)
        if base is None:
            raise ValueError("max_class_drop measures each class against alpha 0: include 0 in the alphas")
        for row in rows:
            drops = sorted(((before - row["per_class_iou"].get(c), c) for c, before in base["per_class_iou"].items()
                            if before is not None and row["per_class_iou"].get(c) is not None), reverse=True)
            if drops and drops[0][0] > max_class_drop + 1e-12:
                c = drops[0][1]
                ruled_out[row["alpha"]] = (f"{c} {base['per_class_iou'][c]:.3f} -> {row['per_class_iou'][c]:.3f}, "
                                           f"a drop over {max_class_drop:g}")
    kept = [row for row in rows if row["alpha"] not in ruled_out]
    return max(kept, key=lambda row: (row["mIoU"], -row["alpha"])), ruled_out


def read_calibration(path) -> list[float]:
    """The `logit_bias` a calibration file (written by `calibrate`) chose."""
    import json
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        bias = data["logit_bias"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such calibration file (segzoo calibrate RUN writes one)") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a calibration file (expected JSON with 'logit_bias', "
                         "as segzoo calibrate writes)") from None
    if not isinstance(bias, list) or not all(isinstance(b, (int, float)) for b in bias):
        raise ValueError(f"{path}: 'logit_bias' must be a list of numbers, got {bias!r}")
    return [float(b) for b in bias]


def calibrate(source, *, split: str | None = None, max_images: int | None = None,
              alphas: Sequence[float] = ALPHAS, pointer: str = "best", device="auto",
              data_root: str | None = None, max_class_drop: float | None = None) -> dict:
    """Score `alphas` on `split` (default: the recipe's training split) and return the
    result, with the chosen `alpha` and `logit_bias`; a run folder also gets it as
    `calibration.json` (`calibration-<split>.json` for another split). Needs the source's recipe,
    whose `train.class_weights` it undoes. `max_class_drop`: see `choose_alpha` (alpha 0 is
    scored too, as the reference)."""
    alphas = sorted({float(a) for a in alphas})
    if not alphas or any(a < 0 for a in alphas):
        raise ValueError(f"alphas must be one or more numbers >= 0, got {list(alphas)}")
    if max_class_drop is not None:
        if not max_class_drop >= 0:
            raise ValueError(f"--max-class-drop must be >= 0 (IoU), got {max_class_drop!r}")
        alphas = sorted({0.0, *alphas})
    dev = device_for(device, what="--device")
    src = load_source(source, pointer=pointer, device=dev)
    recipe = require_recipe(src, source, "calibration")
    if data_root is not None:
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"root": data_root})})
    if recipe.train.class_weights is None:
        raise ValueError(f"{source}: its recipe trains without train.class_weights, so there is no "
                         "class prior to undo")
    if not hasattr(src.model, "set_logit_bias"):
        raise ValueError(f"{source}: a {type(src.model).__name__} takes no logit_bias")
    split = split or recipe.data.train_split
    dataset = make_dataset(recipe.data, split, train=False)
    # Median-frequency weights are the training split's; a list needs no data but the classes.
    from_train = recipe.train.class_weights == "median_frequency" and split != recipe.data.train_split
    weights = class_weights(recipe, make_dataset(recipe.data, recipe.data.train_split, train=False)
                            if from_train else dataset)
    ignore_index = dataset.ignore_index
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {max_images}")
    chosen = spread(len(dataset), max_images)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, chosen), batch_size=1,
                                         num_workers=min(recipe.data.num_workers, 2))
    meta = src.meta
    protocol = stored_protocol(meta.get("eval_protocol"))
    rows = []
    for alpha in alphas:
        src.model.set_logit_bias(prior_bias(weights.tolist(), alpha))
        r = evaluate(src.model, loader, num_classes=len(meta["classes"]), class_names=meta["classes"],
                     ignore_index=ignore_index, device=dev, **protocol_args(protocol))
        rows.append({"alpha": alpha, "mIoU": r["mIoU"], "pixel_acc": r["pixel_acc"],
                     "per_class_iou": r["per_class_iou"]})
    best, ruled_out = choose_alpha(rows, max_class_drop)
    for row in rows:
        if row["alpha"] in ruled_out:
            row["ruled_out"] = ruled_out[row["alpha"]]
    result = {"source": str(source), "split": split, "images": len(chosen), "max_images": max_images,
              "protocol": protocol, "class_weights": weights.tolist(), "alphas": rows,
              "max_class_drop": max_class_drop,
              "alpha": best["alpha"], "logit_bias": prior_bias(weights.tolist(), best["alpha"])}
    if src.run_dir is not None:
        # Only the training split's choice is the run's calibration; a look at another
        # split (val, to check the choice) goes beside it and never replaces it.
        name = FILE if split == recipe.data.train_split else f"calibration-{split}.json"
        atomic_write_json(Path(src.run_dir) / name, result)
        result["written"] = str(Path(src.run_dir) / name)
    return result
