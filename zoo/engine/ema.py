"""Exponential moving average of the weights (`train.ema_decay`): the model a run scores.

With ``train.ema_decay: d``, after every optimiser step the run updates an average of every
parameter and floating-point buffer (BatchNorm's running statistics; integer buffers are copied):
``ema = ema + (1 - d_t) * (w - ema)`` with the warm-up ``d_t = min(d, (1 + t) / (10 + t))``, t the
updates made so far, so the first steps' weights, far from trained, fade fast (a plain ``d = 0.999``
still holds 5% of the initial weights after 3000 steps). The average is the model the run
evaluates, keeps as `best`, writes as the checkpoint's ``model.safetensors`` (so `segzoo eval`,
`calibrate`, `publish` and ``model.pretrained: <run>`` all take it) and draws its pictures with.
The training weights, which the optimiser's state belongs to, travel in the checkpoint's training
state, so a resumed run continues both. At the end the run scores the training weights too
(``eval.json``: ``without_ema``): one run measures what the average gained.

`torch.optim.swa_utils.AveragedModel` keeps the copy and walks its parameters and buffers;
its `get_ema_multi_avg_fn` has a fixed decay, so the warm-up is written here.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["warmed_decay", "make_ema", "ema_state", "load_ema_state"]


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (0 for the first): ``min(decay, (1 + t) / (10 + t))``."""
    return min(decay, (1 + updates) / (10 + updates))


def make_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An average of ``model``'s weights and buffers, a copy of them until the first update; None
    without a decay."""
    if decay is None:
        return None

    @torch.no_grad()
    def update(averaged: list, current: list, updates: torch.Tensor) -> None:
        # `updates` counts AveragedModel's calls before this one, its first (the copy) included
        weight = 1 - warmed_decay(decay, int(updates) - 1)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked) are counters, not estimates
            for a, c in zip(averaged, current):
                a.copy_(c)

    ema = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    ema.update_parameters(model)  # the copy, so the first average starts from the model's weights
    return ema


def ema_state(model: nn.Module, ema: AveragedModel) -> dict:
    """What a checkpoint's training state keeps beside the averaged weights: the training weights
    and the number of updates (the warm-up's t)."""
    return {"weights": model.state_dict(), "updates": int(ema.n_averaged) - 1}


def load_ema_state(model: nn.Module, ema: AveragedModel, averaged: dict, state: dict | None,
                   where: str) -> None:
    """Restore a run's average (``averaged``, the checkpoint's model weights) and its training
    weights (``state``, `ema_state`'s)."""
    if state is None:
        raise ValueError(f"{where} holds no training weights beside its averaged ones (train.ema_decay "
                         "was unset when it was written): set it back, or train into a new run folder")
    ema.module.load_state_dict(averaged)
    model.load_state_dict(state["weights"])
    ema.n_averaged.fill_(int(state["updates"]) + 1)
