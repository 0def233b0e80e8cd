"""Evaluation of any source (`zoo.engine.sources.load_source`: a run folder, a
published folder, an entry) under the protocol stored with its weights.

Used by `segzoo eval`. A checkpoint file that cannot be read stops it with a
`CheckpointError` naming the file, before any model is built.
"""
from __future__ import annotations

import torch

from zoo.common.fileio import atomic_write_json
from zoo.data import make_dataset
from zoo.engine.calibrate import read_calibration
from zoo.engine.data import loader_workers
from zoo.engine.distributed import device_for
from zoo.engine.evaluate import evaluate, protocol_args, stored_protocol
from zoo.engine.sources import load_source, require_recipe
from zoo.engine.visualize import write_pictures
from zoo.hub.formats import CALIBRATED_PICTURES, resolve_run, weights_sha256
from zoo.inference.deploy import backend_model


def eval_file_name(split: str, protocol: dict, stored: dict, max_images: int | None = None,
                   calibrated: bool = False) -> str:
    """`eval-<split>-<mode>.json` for the protocol stored with the weights, the file
    `segzoo publish --eval` reads; an overridden scale set, flip, window, a
    `--max-images` cut or a calibration adds a suffix, so that trying another
    protocol never overwrites the stored protocol's result."""
    parts = [f"eval-{split}-{protocol['mode']}"]
    if list(protocol.get("scales") or [1.0]) != list(stored.get("scales") or [1.0]):
        parts.append("s" + "_".join(f"{float(s):g}" for s in protocol["scales"]))
    if bool(protocol.get("flip")) != bool(stored.get("flip")):
        parts.append("flip" if protocol.get("flip") else "noflip")
    for key in ("crop_size", "stride"):
        value = protocol.get(key)
        if protocol["mode"] == "slide" and value and list(value) != list(stored.get(key) or []):
            parts.append(key.split("_")[0] + "x".join(str(int(v)) for v in value))
    if max_images is not None:
        parts.append(f"first{int(max_images)}")
    if calibrated:
        parts.append("calibrated")
    return "-".join(parts) + ".json"


def evaluate_run(source, *, split: str | None = None, pointer: str = "best", device="auto",
                 mode=None, crop_size=None, stride=None, scales=None, flip=None,
                 max_images=None, data_root: str | None = None, calibration=None,
                 backend: str = "torch", precision: str = "fp32", threads: int | None = None) -> dict:
    """Evaluate a trained model (a run folder, a published folder whose config.json
    carries the recipe, or an entry with one) with the protocol stored with its
    weights, any part of which can be overridden. `data_root` replaces the
    recipe's `data.root`. `calibration`: a calibration file (`segzoo calibrate`) whose
    `logit_bias` the model adds to its logits; the result records it, and
    `segzoo publish --ship --eval` ships it. A run folder gets the result as
    `eval_file_name(...)`, with the checkpoint and the sha256 of the weights scored
    (publishing refuses it for any other weights); `written` names that file."""
    dev = device_for(device, what="--device")
    src = load_source(source, pointer=pointer, device=dev)
    model, meta = src.model, src.meta
    checkpoint = None
    if src.run_dir is not None:  # the checkpoint loaded, even if the pointer moves meanwhile
        checkpoint = (src.run_dir / "checkpoints" / meta["checkpoint"] if meta.get("checkpoint")
                      else resolve_run(src.run_dir, pointer))
        scored = weights_sha256(checkpoint)
    bias = (getattr(model, "config", None) or {}).get("logit_bias")
    if calibration is not None:
        bias = read_calibration(calibration)
        model.set_logit_bias(bias)
    recipe = require_recipe(src, source, "evaluation")
    if data_root is not None:
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"root": data_root})})
    if backend != "torch" or precision != "fp32" or threads:  # ONNX Runtime on the CPU (zoo/inference/deploy.py)
        model = backend_model(src, source, backend=backend, precision=precision, threads=threads,
                              data_root=data_root, pointer=pointer)
    stored = stored_protocol(meta.get("eval_protocol"))
    protocol = dict(stored)
    for key, value in dict(mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip).items():
        if value is not None:
            protocol[key] = value
    if protocol["mode"] != "slide" and (crop_size is not None or stride is not None):
        raise ValueError(f"--crop-size and --stride apply to --mode slide; the protocol's mode is "
                         f"{protocol['mode'] or 'whole'}, which would ignore them (add --mode slide)")
    split = split or recipe.data.val_split
    full = dataset = make_dataset(recipe.data, split, train=False)
    ignore_index = dataset.ignore_index
    if max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_images, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1,
                                         num_workers=min(loader_workers(recipe.data.num_workers)[0], 2))
    result = evaluate(model, loader, num_classes=len(meta["classes"]), class_names=meta["classes"],
                      ignore_index=ignore_index, device=dev, **protocol_args(protocol))
    result["split"] = split
    result["images"], result["max_images"] = len(dataset), max_images  # a subset is not the split's figure
    result["backend"] = {"backend": backend, "precision": precision}
    if bias is not None:
        result["logit_bias"] = [float(b) for b in bias]
        if calibration is not None:
            result["calibration"] = str(calibration)
    if src.run_dir is not None:
        result["checkpoint"], result["weights_sha256"] = str(checkpoint), scored
        name = eval_file_name(split, protocol, stored, max_images, calibrated=calibration is not None)
        if backend != "torch":  # never in the place of the eager result publishing reads
            name = name.replace(".json", f"-{backend}-{precision}.json")
        atomic_write_json(src.run_dir / name, result)
        result["written"] = str(src.run_dir / name)
        if calibration is not None:  # the pictures `--ship` takes with a calibrated evaluation
            write_pictures(model, full, src.run_dir / CALIBRATED_PICTURES, result, meta["classes"], dev,
                           recipe.log.num_images, protocol)
    else:
        result["checkpoint"] = str(meta.get("source", source))
    return result
