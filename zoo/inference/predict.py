"""Inference on images, read exactly as evaluation reads them.

    import zoo
    out = zoo.predict("runs/unet_camvid", "frame.png")   # a path, an (H, W, 3) uint8 array or a PIL image
    out.mask, out.probabilities, out.overlay             # (H, W), (K, H, W), (H, W, 3) at the image's size

    predictor = zoo.Predictor("unet_resnet10t_camvid")   # load once (any source of zoo/engine/sources.py)
    for path in image_files(["photos/"]):
        predictor(path).save("preds/", path.stem)

    zoo.Predictor("fcn8s_resnet10t_camvid", backend="onnxruntime")                  # CPU deployment
    zoo.Predictor("fcn8s_resnet10t_camvid", backend="onnxruntime", precision="int8")

An image goes through the training recipe's validation transforms (a resize,
say) and its mean / std; where the model was evaluated on frames of one size (CamVid's
360x480, `eval_protocol["frame_size"]`), an image of another size is resized (bilinear,
keeping its aspect ratio, as mmsegmentation's keep-ratio test resize does) to fit that
frame, so that objects come at the scale the weights were scored at; then the evaluation
protocol stored with the weights (whole or sliding window, scales, flip); the scores are
resized (bilinear) back to the image's own size, as the run's pictures do. Without a recipe (a model
object, an entry without one) the image is only normalised, with the model's
`meta` mean / std or ImageNet's.

`backend="onnxruntime"` runs the same protocol on an exported copy of the
model (zoo/inference/deploy.py: exported once, cached beside the weights by their
sha256); `precision="int8"` on its statically quantized copy, calibrated on
frames of the training split (`data_root` replaces the recipe's data.root).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data import build_transform
from zoo.data.base import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, read_image
from zoo.data.palettes import colorize, make_palette
from zoo.engine.distributed import device_for
from zoo.engine.evaluate import frame_scores, gives_probabilities
from zoo.engine.sources import load_source
from zoo.engine.visualize import save_png
from zoo.hub.load import protocol_applied
from zoo.inference.deploy import BACKENDS, PRECISIONS, backend_model, check_choice, runtime_device


@dataclass
class Prediction:
    mask: np.ndarray            # (H, W) class ids
    probabilities: np.ndarray   # (K, H, W) float32, summing to 1 over the classes
    overlay: np.ndarray         # (H, W, 3) uint8: the prediction's colours over the image
    classes: list
    palette: np.ndarray         # (K, 3) uint8

    def save(self, out_dir, stem: str) -> list[Path]:
        """`<stem>_mask.png` (palette PNG: pixel values are class ids) and `<stem>_overlay.png`."""
        from PIL import Image

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        mask = Image.fromarray(self.mask.astype(np.uint8), mode="P")
        mask.putpalette(self.palette.flatten().tolist())
        mask.save(out_dir / f"{stem}_mask.png")
        return [out_dir / f"{stem}_mask.png", save_png(self.overlay, out_dir / f"{stem}_overlay.png")]


def as_rgb(image) -> np.ndarray:
    """A path, a PIL image or an array -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, turned upright as a path is read
        from PIL import ImageOps
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image array of dtype {array.dtype}: expected uint8 RGB (H, W, 3)")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image array of shape {array.shape}: expected (H, W, 3) RGB")
    return np.ascontiguousarray(array[..., :3])


class Predictor:
    """A model from any source, ready to predict images; see the module docstring."""

    def __init__(self, source, *, device="auto", pointer: str = "best", backend: str = "torch",
                 precision: str = "fp32", threads: int | None = None, data_root: str | None = None):
        check_choice(backend, BACKENDS, "backend")
        check_choice(precision, PRECISIONS, "precision")
        self.device = device_for(runtime_device(backend, device), what="device")
        src = load_source(source, pointer=pointer, device=self.device)
        self.meta, self.recipe = src.meta, src.recipe
        self.model = backend_model(src, source, backend=backend, precision=precision, threads=threads,
                                   data_root=data_root, pointer=pointer)
        r = self.recipe
        if r is not None:
            entries, family, mean, std = r.data.val_transforms, r.data.dataset, r.data.mean, r.data.std
        else:
            entries, family = None, "folder"
            mean, std = self.meta.get("mean", IMAGENET_MEAN), self.meta.get("std", IMAGENET_STD)
        self.transform = build_transform(entries, train=False, family=family, crop_size=None,
                                         mean=mean, std=std)
        self.protocol = dict(self.meta.get("eval_protocol") or {})
        self.classes = list(self.meta.get("classes") or [])
        self.palette = np.asarray(self.meta["palette"], np.uint8) if self.meta.get("palette") else None

    @torch.no_grad()
    def __call__(self, image) -> Prediction:
        rgb = as_rgb(image)
        x = to_frame(self.transform(image=rgb)["image"][None].to(self.device), self.protocol.get("frame_size"))
        num_classes = len(self.classes) or None
        with protocol_applied():
            if num_classes is None:  # a bare model: its output says how many classes
                num_classes = self.model(x).shape[1]
                self.classes = [f"class {i}" for i in range(num_classes)]
            scores = frame_scores(self.model, x, rgb.shape[:2], self.protocol, num_classes).float()
        probs = scores if gives_probabilities(self.protocol) else scores.softmax(1)
        probs = probs[0].cpu().numpy()
        mask = probs.argmax(0).astype(np.uint8 if num_classes <= 256 else np.int64)
        palette = self.palette if self.palette is not None else make_palette(num_classes)
        overlay = (0.5 * rgb + 0.5 * colorize(mask, palette)).astype(np.uint8)
        return Prediction(mask, probs, overlay, self.classes, palette)


def to_frame(x: torch.Tensor, frame) -> torch.Tensor:
    """(N, 3, h, w) resized (bilinear) by the one factor that fits it in `frame` (h, w), long side
    to long side, short to short; as it is when it fits already or no frame is known."""
    if not frame:
        return x
    h, w = x.shape[-2:]
    factor = min(max(frame) / max(h, w), min(frame) / min(h, w))
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def predict(source, image, **kwargs) -> Prediction:
    """One image's prediction by a model from any source (`Predictor` loads once for many)."""
    return Predictor(source, **kwargs)(image)


def image_files(paths) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in the folders named."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return files


def predict_files(source, images, out_dir, *, pointer: str = "best", device="auto", **backend) -> list[Path]:
    """`tools/predict.py`: masks and overlays for image files and folders of images;
    `backend`: Predictor's backend, precision, threads and data_root."""
    predictor = Predictor(source, device=device, pointer=pointer, **backend)
    written = []
    for path in image_files(images):
        written += predictor(path).save(out_dir, path.stem)
    return written
