"""Whether the code runs under a tracer (`torch.jit.trace`, `torch.compile` / `torch.export`, the
ONNX exporter): there the upsamplers take their plain tensor forms (no Python loops over sizes,
no hand-written autograd functions) and the pretrained models' size check stays silent."""
from __future__ import annotations


def is_tracing() -> bool:
    import torch

    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
