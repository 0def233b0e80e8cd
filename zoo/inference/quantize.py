"""int8 static quantization of an exported model with ONNX Runtime's tools.

`quantize_int8` runs `onnxruntime.quantization.quant_pre_process` (shape
inference, graph optimisation: batch norms folded into convolutions), then
`quantize_static` in the QDQ format with per-channel int8 weights and uint8
activations whose ranges MinMax calibration measures on frames of the
model's own training split. Those frames are read as evaluation reads them
(`calibration_source`): the recipe's validation transforms, then the
evaluation protocol (scale, windows, flip) recorded at the model's input, so
the ranges are those of the inputs the deployed model will see.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.data import make_dataset
from zoo.engine.evaluate import predict_logits, protocol_args
from zoo.engine.sources import require_recipe

CALIBRATION_FRAMES = 24


class _Recorder(nn.Module):
    """Stands in for the model under `predict_logits`: keeps each input, returns zeros."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes, self.inputs = num_classes, []

    def forward(self, x):
        self.inputs.append(x.detach().float().cpu().numpy().copy())
        return x.new_zeros(x.shape[0], self.num_classes, *x.shape[-2:])


def model_inputs(images, protocol: dict, num_classes: int) -> list[np.ndarray]:
    """The (1, 3, h, w) arrays the model is called on when `images` (transformed,
    (3, H, W) each) are predicted under `protocol`."""
    recorder = _Recorder(num_classes)
    for image in images:
        predict_logits(recorder, image[None], num_classes=num_classes, **protocol_args(protocol))
    return recorder.inputs


def calibration_source(src, source, data_root: str | None = None, frames: int = CALIBRATION_FRAMES):
    """A function of the input size returning calibration inputs: `frames` frames spread
    evenly over the recipe's training split, as the model sees them (module docstring).
    The split is read only when called: a cached int8 file needs no data."""
    recipe = require_recipe(src, source, "int8 calibration (frames of its training split)")
    data = recipe.data if data_root is None else recipe.data.model_copy(update={"root": data_root})
    protocol = dict(src.meta.get("eval_protocol") or {})
    num_classes = len(src.meta.get("classes") or []) or 2
    cache = []

    def inputs(size) -> list[np.ndarray]:
        if not cache:
            dataset = _training_split(data)
            picks = np.linspace(0, len(dataset) - 1, min(frames, len(dataset))).round().astype(int)
            cache.extend(model_inputs([dataset[int(i)]["image"] for i in picks], protocol, num_classes))
        return [_resized(x, size) for x in cache]
    return inputs


def _training_split(data):
    try:
        return make_dataset(data, data.train_split, train=False)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"int8 calibrates on the training split of {data.dataset} at {data.root}, "
                                f"which cannot be read ({e}); pass --data-root") from None


def _resized(x: np.ndarray, size) -> np.ndarray:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(size), mode="bilinear",
                                        align_corners=False)
    return t.numpy()


def quantize_int8(fp32: Path, out: Path, inputs: list[np.ndarray]) -> Path:
    """`fp32` quantized to `out` (QDQ, per-channel weights), calibrated on `inputs`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if not inputs:
        raise ValueError("int8 calibration needs at least one frame")
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    prepared = out.with_name(out.stem + ".pre.onnx")
    # ONNX's own shape inference: ONNX Runtime's symbolic one fails on some of these graphs and
    # then leaves sym_shape_infer_temp.onnx and its weights in the current folder.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.it = iter(inputs)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    quantize_static(str(prepared), str(out), Frames(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink(missing_ok=True)
    return out
