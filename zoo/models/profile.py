"""Model cost: parameters and FLOPs at a given input size.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (PyTorch's own
counter: convolutions, transposed convolutions, matmuls; 1 multiply-add = 2
FLOPs), so no third-party counter is needed.
"""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, size: tuple[int, int] = (512, 512), in_chans: int = 3) -> int:
    """FLOPs of one forward pass on one image of `size` (eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, *size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()
