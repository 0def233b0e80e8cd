"""A run folder as a source: its model, metadata and recipe.

Used by `tools/eval.py`, `tools/predict.py`, publishing and `zoo.load`. A
checkpoint file that cannot be read stops them with a `CheckpointError`
naming the file, before any model is built.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.fileio import atomic_write_json


def find_checkpoint(run_dir: Path, pointer: str = "best") -> Path:
    """The checkpoint folder a run folder's pointer names (`best` falls back to `last`)."""
    from zoo.hub import resolve_checkpoint
    return resolve_checkpoint(run_dir, pointer)


def load_run(run_dir: Path, pointer: str = "best", device="cpu"):
    """(model, meta, recipe or None) of a run folder; the model comes from
    `zoo.hub.load`, which never downloads encoder weights."""
    from zoo.engine.checkpoint import check_readable
    from zoo.hub import load
    from zoo.recipe import load_recipe
    check_readable(find_checkpoint(run_dir, pointer))
    model = load(run_dir, pointer=pointer, map_location=device)
    recipe_file = Path(run_dir) / "recipe.yaml"
    recipe = load_recipe(recipe_file) if recipe_file.is_file() else None
    return model, model.meta, recipe


def evaluate_run(run_dir, *, split: str | None = None, pointer: str = "best", device="auto",
                 mode=None, crop_size=None, stride=None, scales=None, flip=None,
                 max_images=None) -> dict:
    """Evaluate a run's checkpoint with the protocol stored in it, any part
    of which can be overridden; writes `eval-<split>-<mode>.json`."""
    from zoo.engine.distributed import device_for
    from zoo.engine.evaluate import evaluate
    from zoo.engine.data import make_dataset
    dev = device_for(device, what="--device")
    model, meta, recipe = load_run(run_dir, pointer, dev)
    if recipe is None:
        raise FileNotFoundError(f"{run_dir}/recipe.yaml: needed to rebuild the dataset")
    protocol = dict(meta.get("eval_protocol") or {"mode": "whole", "scales": [1.0], "flip": False})
    for key, value in dict(mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip).items():
        if value is not None:
            protocol[key] = value
    split = split or recipe.data.val_split
    dataset = make_dataset(recipe.data, split, train=False)
    ignore_index = dataset.ignore_index
    if max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_images, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=min(recipe.data.num_workers, 2))
    result = evaluate(model, loader, num_classes=len(meta["classes"]), class_names=meta["classes"],
                      ignore_index=ignore_index, device=dev, mode=protocol["mode"],
                      crop_size=protocol.get("crop_size"),
                      stride=protocol.get("stride"), scales=tuple(protocol.get("scales") or (1.0,)),
                      flip=bool(protocol.get("flip")))
    result["split"] = split
    result["checkpoint"] = str(find_checkpoint(run_dir, pointer))
    atomic_write_json(Path(run_dir) / f"eval-{split}-{protocol['mode']}.json", result)
    return result


@torch.no_grad()
def predict_files(run_dir, images, out_dir, *, pointer: str = "best", device="auto") -> list[Path]:
    """Palette masks (`<stem>_mask.png`) and overlays (`<stem>_overlay.png`)
    for image files, with the run's normalisation and evaluation protocol."""
    from PIL import Image

    from zoo.data.base import read_image
    from zoo.engine.distributed import device_for
    from zoo.engine.evaluate import predict_logits
    from zoo.data.palettes import colorize
    from zoo.engine.visualize import save_png
    dev = device_for(device, what="--device")
    model, meta, _ = load_run(run_dir, pointer, dev)
    palette = np.asarray(meta["palette"], np.uint8)
    mean, std = np.array(meta["mean"], np.float32), np.array(meta["std"], np.float32)
    p = meta.get("eval_protocol") or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        image = read_image(Path(path))
        x = torch.from_numpy(((image / 255.0 - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
        logits = predict_logits(model, x.to(dev), mode=p.get("mode", "whole"),
                                crop_size=p.get("crop_size"), stride=p.get("stride"),
                                scales=tuple(p.get("scales") or (1.0,)), flip=bool(p.get("flip")),
                                num_classes=len(meta["classes"]))
        pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        mask = Image.fromarray(pred, mode="P")
        mask.putpalette(palette.flatten().tolist())
        stem = Path(path).stem
        mask_path = out_dir / f"{stem}_mask.png"
        mask.save(mask_path)
        overlay = (0.5 * image + 0.5 * colorize(pred, palette)).astype(np.uint8)
        written += [mask_path, save_png(overlay, out_dir / f"{stem}_overlay.png")]
    return written
