"""Shipping a trained run as a zoo entry inside the package.

    ship("runs/unet_resnet10t_camvid", "unet_resnet10t_camvid", recipe_file="recipes/unet_resnet10t_camvid.yaml")

writes `zoo/weights/<entry>.safetensors` (the best checkpoint, floating tensors as fp16:
half the bytes, loaded back as fp32), its row of `zoo/weights/index.json` (what
`zoo.hub.load` registers at import), the run's confusion matrix and val predictions under
`docs/entries/<entry>/`, and regenerates MODEL_CARD.md's entries section. Budget: 30 MB
per weights file, 64 MB for all of them. An entry's file is replaced only for a real gain,
+0.02 mIoU (`force=True` overrides), so the history holds few retrains: on the entry's
sequence-disjoint validation when it records one (`holdout_file`, the recipe retrained with
`data.options.holdout` and scored there, becomes its new record), else on val. A re-ship that
keeps the file byte for byte (a new logit bias, say) needs no gain, only no loss.
Nothing written carries a local absolute path: the recipe's paths become placeholders.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import yaml

from zoo.common.fileio import atomic_write_json
from zoo.common.machine import describe
from zoo.engine.evaluate import PROTOCOL_KEYS, stored_protocol
from zoo.hub import entries
from zoo.hub import load as hub
from zoo.hub.formats import CALIBRATED_PICTURES, load_meta, resolve_run, weights_sha256
from zoo.lab import card as card_mod
from zoo.models.profile import count_flops, count_params

MAX_FILE_BYTES = 30_000_000
MAX_TOTAL_BYTES = 64_000_000
MIN_GAIN = 0.02
INDEX_FORMAT = "segzoo-index/1"
REPO = Path(__file__).resolve().parents[2]
COST_SIZE = (360, 480)
NUM_PREDICTIONS = 2
LATENCY_S = 1.0  # seconds of timed runs behind the median latency


class ShipError(ValueError):
    """A run that may not be shipped (over budget, no better than the shipped entry, ...)."""


def placeholders(obj, key: str = ""):
    """`obj` with every absolute path string replaced by `<key.path>` (e.g. `<data.root>`)."""
    if isinstance(obj, dict):
        return {k: placeholders(v, f"{key}.{k}" if key else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [placeholders(v, key) for v in obj]
    if isinstance(obj, str) and (os.path.isabs(obj) or obj.startswith("~")):
        return f"<{key}>"
    return obj


def _from_file(recorded, written, circular: str):
    """`recorded` with each placeholder (and each `circular` value: the entry's own name) that
    `written` sets at the same key replaced by the written value."""
    if isinstance(recorded, dict) and isinstance(written, dict):
        return {k: _from_file(v, written[k], circular) if k in written else v for k, v in recorded.items()}
    placeholder = isinstance(recorded, str) and recorded.startswith("<") and recorded.endswith(">")
    stale = placeholder or recorded == circular
    return written if stale and not isinstance(written, (dict, list)) else recorded


def recorded_recipe(run_recipe: dict | None, name: str, recipe_file: str = "") -> dict | None:
    """The recipe an entry's row records: the run's resolved recipe, absolute paths made
    placeholders (`<data.root>`). Where `recipe_file` (the file that reproduces the entry)
    sets a key the run resolved to a local path, or to the entry's own name (a stage that
    started from the entry it replaces), the row takes the file's value, so it reads as the
    recipe a person re-runs and not as this machine's folders."""
    recorded = placeholders(run_recipe)
    path = Path(recipe_file) if recipe_file else None
    if path is not None and not path.is_file():
        path = REPO / recipe_file
    if recorded is None or path is None or not path.is_file():
        return recorded
    written = yaml.safe_load(path.read_text())
    return _from_file(recorded, written, name) if isinstance(written, dict) else recorded


def machine() -> str:
    """The CPU (model and cores), any GPU, and the torch version (`zoo.common.machine`)."""
    return describe()


def measure(model, size=COST_SIZE, threads: int = 1, min_run_time: float = 1.0) -> tuple[dict, dict]:
    """(cost, speed): parameters and GFLOPs at `size`; median CPU latency of one image."""
    import torch
    from torch.utils import benchmark

    model = model.eval()
    cost = {"params": count_params(model), "gflops": round(count_flops(model, tuple(size)) / 1e9, 3),
            "size": list(size)}
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
        median = timer.blocked_autorange(min_run_time=min_run_time).median
    speed = {"latency_ms": round(1000 * median, 2), "device": describe(gpu=False).split(";")[0],
             "threads": threads, "batch": 1, "size": list(size)}
    return cost, speed


def read_shipped(weights_dir: Path) -> dict[str, hub.Entry]:
    index = Path(weights_dir) / "index.json"
    return hub.read_index(index) if index.is_file() else {}


def write_index(weights_dir: Path, entries: dict[str, hub.Entry]) -> None:
    rows = []
    for name in sorted(entries):
        row = entries[name].to_dict()
        row["url"] = f"{name}.safetensors"  # relative: the index travels with the package
        rows.append(row)
    atomic_write_json(Path(weights_dir) / "index.json", {"format": INDEX_FORMAT, "entries": rows})


def evaluated_metrics(ckpt: Path, meta: dict, eval_file: Path | None) -> tuple[dict, dict, list | None]:
    """(metrics, eval protocol, logit bias): an evaluation file of this very checkpoint's
    weights, by their sha256 (with the logit bias it was measured with, from `segzoo eval
    --calibration`), else the checkpoint's own val metrics."""
    bias = None
    if eval_file is None:
        metrics, protocol = dict(meta.get("metrics") or {}), dict(meta.get("eval_protocol") or {})
        where = f"{ckpt}/meta.json"
    else:
        result = json.loads(Path(eval_file).read_text())
        _check_scored(Path(eval_file), result, ckpt)
        _check_whole_split(Path(eval_file), result, ckpt)
        metrics = {k: result[k] for k in ("mIoU", "pixel_acc", "mean_acc", "per_class_iou", "split")
                   if k in result}
        protocol, where = dict(result.get("protocol") or meta.get("eval_protocol") or {}), str(eval_file)
        bias = result.get("logit_bias")
        bias = None if bias is None else [float(b) for b in bias]
    missing = [k for k in ("mIoU", "pixel_acc", "per_class_iou") if k not in metrics]
    if missing:
        raise ShipError(f"{where}: no {', '.join(missing)} to ship with the weights")
    return metrics, protocol, bias


def _check_whole_split(eval_file: Path, result: dict, ckpt: Path) -> None:
    """The evaluation shipped as the val figures must score the run's whole val split."""
    recipe_file = ckpt.parent.parent / "recipe.yaml"
    recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file() else {}
    val_split = ((recipe or {}).get("data") or {}).get("val_split", "val")
    if result.get("split", val_split) != val_split:
        raise ShipError(f"{eval_file}: scored split {result['split']!r}, not the run's val split "
                        f"{val_split!r}; evaluate {ckpt} on it with `segzoo eval`")
    if result.get("max_images") is not None:
        raise ShipError(f"{eval_file}: scored the first {result['max_images']} images only (--max-images); "
                        f"evaluate {ckpt} on the whole {val_split} split with `segzoo eval`")


def _check_scored(eval_file: Path, result: dict, ckpt: Path) -> None:
    """The evaluation must have scored these very weights: a folder name (`iter_000400`)
    is shared by runs stopped at the same iteration, and by a run retrained in place."""
    scored, named = result.get("weights_sha256"), Path(str(result.get("checkpoint", ""))).name or "(unnamed)"
    if not scored:
        raise ShipError(f"{eval_file}: records no weights_sha256 of the weights it scored (checkpoint "
                        f"{named!r}); evaluate {ckpt} again with `segzoo eval`")
    if scored != weights_sha256(ckpt):
        raise ShipError(f"{eval_file}: scored other weights (checkpoint {named!r}, sha256 {scored[:12]}...) "
                        f"than the ones published, {ckpt}; evaluate those with `segzoo eval`")
    backend = result.get("backend") or {"backend": "torch", "precision": "fp32"}
    if (backend.get("backend"), backend.get("precision")) != ("torch", "fp32"):  # numbers of another model
        raise ShipError(f"{eval_file}: scored the weights through {backend.get('backend')} "
                        f"{backend.get('precision')}, not as published (torch fp32); evaluate {ckpt} "
                        "with `segzoo eval` and its default --backend")


def _check_gain(name: str, old: hub.Entry | None, val_miou: float, holdout: dict | None,
                same_file: bool) -> None:
    """Refuse a replacement that does not gain MIN_GAIN (no loss, when the file stays) on the
    figure the entry is judged by: its recorded holdout validation, else val."""
    if old is None:
        return
    need = 0.0 if same_file else MIN_GAIN
    why = "a re-ship of the same file must not lose" if same_file else f"new weights must gain {MIN_GAIN}"
    recorded = (old.validation or {}).get("holdout")
    if recorded:
        if holdout is None:
            raise ShipError(f"{name}: the entry is judged on its `holdout: {recorded}` validation "
                            f"({old.validation['mIoU']:.4f}); give --holdout with the new recipe's "
                            f"evaluation on that holdout (--force replaces it anyway)")
        if holdout["holdout"] != recorded:
            raise ShipError(f"{name}: --holdout scored holdout {holdout['holdout']!r}, the entry's "
                            f"validation is holdout {recorded!r}; the figures do not compare "
                            "(--force replaces it anyway)")
        before, now, figure = float(old.validation["mIoU"]), float(holdout["mIoU"]), f"holdout {recorded} mIoU"
    else:
        before, now, figure = float(old.metrics.get("mIoU", 0.0)), val_miou, "val mIoU"
    if now < before + need:
        raise ShipError(f"{name}: {figure} {now:.4f} does not improve on the shipped {before:.4f} "
                        f"by at least {need:g} (needs >= {before + need:.4f}: {why}); the shipped "
                        "weights stay (--force replaces them anyway)")


def write_fp16(src: Path, dst: Path) -> None:
    """The checkpoint's weights with floating tensors as fp16; refuses values fp16 cannot hold."""
    import torch
    from safetensors.torch import load_file, save_file
    state = load_file(str(src))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    bad = [k for k, v in half.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ShipError(f"{src}: {bad[0]} does not fit in fp16 (values beyond +-65504)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(half, str(dst), metadata={"format": hub.PUBLISHED_FORMAT, "dtype": "float16"})
    os.chmod(dst, 0o644)  # safetensors writes 0600; the package's readers are other users too


def same_weights(a: Path, b: Path) -> bool:
    """Whether two safetensors files hold equal tensors and metadata. Their bytes may
    still differ: safetensors writes the metadata's keys in no fixed order."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if fa.metadata() != fb.metadata():
            return False
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


def check_budget(weights_dir: Path, name: str, new_file: Path) -> None:
    """30 MB per file, 64 MB in all (the other shipped files plus `new_file`)."""
    size = new_file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ShipError(f"{name}: {size / 1e6:.1f} MB of fp16 weights, over the {MAX_FILE_BYTES / 1e6:.0f} MB "
                        "per-file budget; ship a smaller model")
    others = sum(p.stat().st_size for p in Path(weights_dir).glob("*.safetensors")
                 if p.name != f"{name}.safetensors")
    if others + size > MAX_TOTAL_BYTES:
        raise ShipError(f"{name}: the shipped weights would total {(others + size) / 1e6:.1f} MB, over the "
                        f"{MAX_TOTAL_BYTES / 1e6:.0f} MB budget")


def _pictures(run_dir: Path, name: str, docs_dir: Path, root: Path, calibrated: bool = False) -> list[str]:
    pictures = Path(run_dir) / (CALIBRATED_PICTURES if calibrated else "pictures")
    chosen = sorted(p for p in pictures.glob("*.png") if p.name != "confusion.png")[:NUM_PREDICTIONS]
    if (pictures / "confusion.png").is_file():
        chosen.insert(0, pictures / "confusion.png")
    out = Path(docs_dir) / name
    if out.is_dir():
        shutil.rmtree(out)
    written = []
    for src in chosen:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / src.name)
        written.append(os.path.relpath(out / src.name, root))
    return written


def ship(run_dir, name: str, *, weights_dir=None, docs_dir=None, card=None, eval_file=None,
         recipe_file: str = "", command: str = "", machine_name: str = "", force: bool = False,
         pointer: str = "best", latency_s: float | None = None, holdout_file=None,
         holdout_command: str = "") -> dict:
    """Ship the run's `pointer` checkpoint as entry `name` (see the module docstring).
    `holdout_file`: an evaluation of the same recipe retrained with `data.options.holdout`,
    scored on that holdout under the protocol shipped (`holdout_command` says how it was made);
    the gain rule reads it and it becomes the entry's validation record.
    Returns a short summary; raises ShipError when the entry may not be (re)placed."""
    run_dir = Path(run_dir)
    weights_dir = Path(weights_dir) if weights_dir else entries.SHIPPED_INDEX.parent
    card = Path(card) if card else REPO / "MODEL_CARD.md"
    docs_dir = Path(docs_dir) if docs_dir else card.parent / "docs" / "entries"
    hub.check_entry_name(name, f"--ship {name}")
    ckpt = resolve_run(run_dir, pointer)
    meta = load_meta(ckpt)
    metrics, protocol, bias = evaluated_metrics(ckpt, meta, Path(eval_file) if eval_file else None)
    shipped = read_shipped(weights_dir)
    holdout = None
    if holdout_file is not None:
        holdout, holdout_protocol = holdout_record(Path(holdout_file), meta["model"], name, protocol,
                                                    holdout_command, machine_name)
        if holdout_protocol != figure_protocol(protocol):
            raise ShipError(f"{holdout_file}: scored under {card_mod.protocol(holdout_protocol)}, not the "
                            f"protocol shipped ({card_mod.protocol(figure_protocol(protocol))}); evaluate the "
                            "holdout run under the same one")
        if holdout["calibrated"] != (bias is not None):
            ships, scored = ("with", "without") if bias is not None else ("without", "with")
            raise ShipError(f"{holdout_file}: scored {scored} a logit bias, the entry ships {ships} one; "
                            "evaluate the holdout run as the entry is shipped (`segzoo eval --calibration`)")

    tmp = weights_dir / f".{name}.safetensors.tmp"
    final = weights_dir / f"{name}.safetensors"
    try:
        write_fp16(ckpt / hub.WEIGHTS, tmp)
        same_file = final.is_file() and same_weights(final, tmp)
        if not force:
            _check_gain(name, shipped.get(name), float(metrics["mIoU"]), holdout, same_file)
        check_budget(weights_dir, name, tmp)
        model_kwargs = {**meta["model"], "encoder_weights": None}  # the weights cover the encoder
        if bias is not None:  # the evaluation shipped was measured with it (segzoo calibrate)
            model_kwargs["logit_bias"] = bias
        model = hub.build_model(model_kwargs, tmp)  # refuse to ship what would not load
        cost, speed = measure(model, min_run_time=latency_s or LATENCY_S)
        if not same_file:
            os.replace(tmp, final)  # else the shipped file stays, byte for byte (a re-ship with a new bias)
    finally:
        tmp.unlink(missing_ok=True)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else None
    date = datetime.datetime.fromtimestamp((ckpt / "meta.json").stat().st_mtime, datetime.timezone.utc)
    entry = hub.Entry(
        name=name, model=model_kwargs, url=str(final), sha256=hub.sha256_of(final),
        classes=list(meta["classes"]), palette=meta.get("palette", []), mean=meta["mean"], std=meta["std"],
        eval_protocol=protocol, metrics=metrics, dataset=meta.get("dataset", ""),
        recipe=recorded_recipe(recipe, name, recipe_file), speed=speed, cost=cost, recipe_file=recipe_file,
        command=command or (f"python tools/train.py {recipe_file}" if recipe_file else ""),
        machine=machine_name or machine(), date=date.strftime("%Y-%m-%d"), validation=holdout or {},
        pictures=_pictures(run_dir, name, docs_dir, card.parent, calibrated=bias is not None))
    write_index(weights_dir, {**shipped, name: entry})
    card_mod.update_card(card, read_shipped(weights_dir))
    return {"entry": name, "mIoU": metrics["mIoU"], "pixel_acc": metrics["pixel_acc"],
            "replaced": shipped[name].metrics.get("mIoU") if name in shipped else None,
            "holdout": holdout, "replaced_holdout": (shipped[name].validation or {}).get("mIoU")
            if name in shipped else None, "file_replaced": not same_file,
            "weights": final, "megabytes": final.stat().st_size / 1e6, "sha256": entry.sha256,
            "card": card, "pictures": len(entry.pictures)}


def figure_protocol(p: dict | None) -> dict:
    """The settings of an evaluation protocol that change the figure (not the frame size)."""
    p = stored_protocol(p)
    return {k: p[k] for k in PROTOCOL_KEYS}


def holdout_record(eval_file: Path, entry_model: dict, name: str, fallback_protocol: dict | None,
                    command: str, machine_name: str) -> tuple[dict, dict]:
    """(the validation record, the evaluation's protocol) of `eval_file`, refused unless it is the
    entry's architecture (`entry_model`) trained with `data.options.holdout` and scored on that holdout."""
    result = json.loads(eval_file.read_text())
    recipe_file = eval_file.parent / "recipe.yaml"
    if not recipe_file.is_file():
        raise ShipError(f"{eval_file}: no recipe.yaml beside it; give an evaluation inside its run folder")
    recipe = yaml.safe_load(recipe_file.read_text())
    holdout = (recipe.get("data", {}).get("options") or {}).get("holdout")
    if not holdout:
        raise ShipError(f"{recipe_file}: key 'data.options.holdout' is not set: that run was validated on "
                        "frames its training also covers, which the entry's val figure already says")
    if result.get("split") != recipe["data"].get("val_split", "val"):
        raise ShipError(f"{eval_file}: split {result.get('split')!r} is not the holdout "
                        f"(the run's val split, {recipe['data'].get('val_split', 'val')!r})")
    run_model = {k: recipe["model"].get(k) for k in ("name", "encoder", "upsample")}
    entry_model = {k: entry_model.get(k) for k in ("name", "encoder", "upsample")}
    if run_model != entry_model:
        raise ShipError(f"{recipe_file}: model {run_model} is not entry {name}'s {entry_model}")
    date = datetime.datetime.fromtimestamp(eval_file.stat().st_mtime, datetime.timezone.utc)
    validation = {"holdout": holdout, "mIoU": result["mIoU"], "per_class_iou": result["per_class_iou"],
                  "calibrated": "logit_bias" in result, "command": command,
                  "machine": machine_name or machine(), "date": date.strftime("%Y-%m-%d")}
    return validation, figure_protocol(result.get("protocol") or fallback_protocol)
