"""Evaluation: whole-image, sliding-window and multi-scale + flip inference.

Protocols, as the papers report them:

- ``whole``: one forward pass over the full image (FCN, SegNet, U-Net).
- ``slide``: ``crop_size`` windows every ``stride`` pixels, overlapping logits
  averaged by a count map; images smaller than a crop are zero-padded at the
  bottom / right first (mmsegmentation's ``slide_inference``; PSPNet evaluates
  Cityscapes this way on 713x713 crops).
- multi-scale + flip: the image is resized by each scale (bilinear), predicted
  with ``whole`` or ``slide``, the logits resized back and turned into softmax
  probabilities, and the probabilities averaged, together with those of the
  horizontally flipped image when ``flip`` (PSPNet / DeepLab "MS+flip",
  mmsegmentation ``aug_test``).

Metrics come from one confusion matrix over the whole set (``metrics.py``);
Boundary IoU and trimap mIoU (``boundary.py``) are accumulated from the same
predictions in the same pass, and summed over processes alike.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.data.base import IGNORE_INDEX

from .boundary import BoundaryMetrics
from .distributed import gather_objects
from .metrics import ConfusionMatrix

Size = Union[int, Tuple[int, int]]


def _pair(v: Optional[Size]) -> Optional[Tuple[int, int]]:
    if v is None:
        return None
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _list(v):
    return None if v is None else list(v)


def _resize(x: Tensor, size) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _slide(model: nn.Module, image: Tensor, crop: Tuple[int, int], stride: Tuple[int, int],
           num_classes: int) -> Tensor:
    n, _, h, w = image.shape
    (ch, cw), (sh, sw) = crop, stride
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
    H, W = image.shape[-2:]
    logits = image.new_zeros(n, num_classes, H, W)
    count = image.new_zeros(1, 1, H, W)
    rows = max(H - ch + sh - 1, 0) // sh + 1
    cols = max(W - cw + sw - 1, 0) // sw + 1
    for r in range(rows):
        for c in range(cols):
            # The last window is shifted back so it ends at the border, as mmsegmentation does.
            y2, x2 = min(r * sh + ch, H), min(c * sw + cw, W)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            logits[:, :, y1:y2, x1:x2] += model(image[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
    return (logits / count)[:, :, :h, :w]


def slide_window(crop_size: Optional[Size], stride: Optional[Size] = None):
    """((crop_h, crop_w), (stride_h, stride_w)); the stride defaults to two thirds
    of the crop, rounded (mmsegmentation's 512 / 341 and 769 / 513 settings)."""
    crop = _pair(crop_size)
    if crop is None:
        raise ValueError("mode='slide' needs crop_size")
    step = _pair(stride) or (round(crop[0] * 2 / 3), round(crop[1] * 2 / 3))
    if min(step) < 1 or step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} must be in [1, crop_size {crop}]")
    return crop, step


PROTOCOL_KEYS = ("mode", "crop_size", "stride", "scales", "flip")
DEFAULT_PROTOCOL = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False}


def stored_protocol(protocol: dict | None) -> dict:
    """A stored eval protocol (`meta.json`'s `eval_protocol`, an entry's, an `eval.json`'s) with
    the settings that change the figure filled in where it has none: weights stored without one
    were scored whole, at scale 1, without flip. Sequences as lists; other keys (``frame_size``)
    kept as they are."""
    p = DEFAULT_PROTOCOL | {k: v for k, v in (protocol or {}).items() if v is not None or k not in PROTOCOL_KEYS}
    return {k: list(v) if k in PROTOCOL_KEYS and isinstance(v, (list, tuple)) else v for k, v in p.items()}


def protocol_args(protocol: dict) -> dict:
    """A stored eval protocol (`meta.json`'s `eval_protocol`, an entry's) as the keywords
    of `predict_logits` and `evaluate`; missing keys take their defaults."""
    p = stored_protocol(protocol)
    return {"mode": p["mode"] or "whole", "crop_size": p["crop_size"], "stride": p["stride"],
            "scales": tuple(p["scales"] or (1.0,)), "flip": bool(p["flip"])}


@torch.no_grad()
def frame_scores(model, x: Tensor, frame_size, protocol: dict, num_classes: int) -> Tensor:
    """(N, K, H, W) scores of a transformed batch at the original frame's size, by
    the evaluation protocol; logits for one scale without flip, else probabilities."""
    scores = predict_logits(model, x, num_classes=num_classes, **protocol_args(protocol))
    if tuple(scores.shape[-2:]) != tuple(frame_size):  # val transforms resized: back to the frame
        scores = F.interpolate(scores.float(), size=tuple(frame_size), mode="bilinear", align_corners=False)
    return scores


def gives_probabilities(protocol: dict) -> bool:
    """Whether `frame_scores` under `protocol` are probabilities (several scales or flip) rather than logits."""
    args = protocol_args(protocol)
    return args["scales"] != (1.0,) or args["flip"]


def predict_logits(model: nn.Module, image: Tensor, *, mode: str = "whole",
                   crop_size: Optional[Size] = None, stride: Optional[Size] = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False,
                   num_classes: int) -> Tensor:
    """(N, 3, H, W) image -> (N, K, H, W) scores.

    With one scale of 1.0 and no flip these are the model's logits; otherwise
    they are softmax probabilities averaged over scales (and flips).
    ``crop_size`` / ``stride`` are an int or (h, w); see ``slide_window``.
    """
    if mode == "slide":
        crop, step = slide_window(crop_size, stride)

        def run(x):
            return _slide(model, x, crop, step, num_classes)
    elif mode == "whole":
        run = model
    else:
        raise ValueError(f"unknown mode {mode!r}; valid: 'whole', 'slide'")

    size = image.shape[-2:]
    scales = tuple(scales)
    if scales == (1.0,) and not flip:
        return run(image)
    probs, passes = 0.0, 0
    for s in scales:
        scaled = _resize(image, (max(1, round(size[0] * s)), max(1, round(size[1] * s))))
        for flipped in ((False, True) if flip else (False,)):
            x = scaled.flip(-1) if flipped else scaled
            out = run(x)
            out = out.flip(-1) if flipped else out
            probs = probs + _resize(out, size).softmax(1)
            passes += 1
    return probs / passes


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, num_classes: int,
             class_names: Optional[Sequence[str]] = None, ignore_index: int = IGNORE_INDEX,
             device="cpu", mode: str = "whole", crop_size: Optional[Size] = None,
             stride: Optional[Size] = None, scales: Sequence[float] = (1.0,),
             flip: bool = False, max_batches: Optional[int] = None,
             progress: bool = False, boundary_dilation_ratio: float = 0.02,
             trimap_width: int = 3) -> dict:
    """mIoU and friends of ``model`` over ``loader`` (batches of image / mask / name).

    The model must already be on ``device``; its train / eval mode is restored
    afterwards. Scores are resized (bilinear) to the label's size where they
    differ, so labels may be kept at their original resolution. Under
    torch.distributed each process evaluates its shard and the matrices are summed.

    Beside mIoU, the result holds ``boundary_iou`` and ``trimap_miou`` (with
    per-class values and ``boundary_params``) from the same predictions: the
    band is ``boundary_dilation_ratio`` of each label's diagonal (Cheng et al.'s
    2%), the trimap ``trimap_width`` pixels on each side of a class boundary.
    """
    if mode == "slide":
        crop_size, stride = slide_window(crop_size, stride)
    elif mode == "whole":
        crop_size, stride = _pair(crop_size), _pair(stride)
    else:
        raise ValueError(f"unknown mode {mode!r}; valid: 'whole', 'slide'")
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    bm = BoundaryMetrics(num_classes, ignore_index, dilation_ratio=boundary_dilation_ratio,
                         trimap_width=trimap_width, device=device)
    batches = loader
    if progress:
        from tqdm import tqdm
        total = len(loader) if hasattr(loader, "__len__") else None
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)
        batches = tqdm(loader, total=total, desc="eval", leave=False)
    sizes = set()  # of the frames the protocol is applied to (after the val transforms)
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            image = batch["image"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            sizes.add(tuple(image.shape[-2:]))
            scores = predict_logits(model, image, mode=mode, crop_size=crop_size, stride=stride,
                                    scales=scales, flip=flip, num_classes=num_classes)
            pred = _resize(scores, mask.shape[-2:]).argmax(1)
            cm.update(pred, mask)
            bm.update(pred, mask)
    finally:
        model.train(was_training)
    cm.all_reduce()
    bm.all_reduce()
    result = cm.compute(class_names)
    result.update(bm.compute(class_names))
    result["protocol"] = {"mode": mode, "crop_size": _list(crop_size), "stride": _list(stride),
                          "scales": [float(s) for s in scales], "flip": bool(flip),
                          "frame_size": _one_size(sizes)}
    result["confusion"] = cm.matrix.tolist()
    return result


def _one_size(sizes: set) -> list | None:
    """The one (h, w) every rank's frames share, else None."""
    every = {tuple(size) for part in gather_objects(sorted(sizes)) for size in part}
    return list(next(iter(every))) if len(every) == 1 else None
