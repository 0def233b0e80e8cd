"""Optimizers and iteration-based learning-rate schedules.

- Parameter groups: the encoder (pretrained backbone) may train at
  ``lr * encoder_lr_mult``; norm-layer weights and biases (every parameter
  with fewer than two dimensions) get no weight decay, as in timm and
  mmsegmentation's ``paramwise_cfg``.
- ``poly``: ``lr * (1 - t / T) ** power`` (DeepLab, PSPNet: power 0.9).
- ``cosine``: cosine annealing to ``min_lr_ratio * lr`` (SGDR without restarts).
- ``constant``.
- All after an optional linear warm-up from ``warmup_ratio * lr`` to ``lr``
  over ``warmup_iters`` iterations; the main schedule then runs over the
  remaining ``total_iters - warmup_iters``. Step the scheduler once per iteration.
"""
from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def _unwrap(model: nn.Module) -> nn.Module:
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def param_groups(model: nn.Module, *, lr: float, weight_decay: float,
                 encoder_lr_mult: float = 1.0) -> List[dict]:
    """Up to four groups, named encoder / encoder_no_decay / decoder / decoder_no_decay; empty ones dropped."""
    model = _unwrap(model)
    encoder = getattr(model, "encoder", None)
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if id(p) in encoder_ids else "decoder"
        decay = p.ndim > 1
        key = part if decay else part + "_no_decay"
        if key not in groups:
            groups[key] = {
                "name": key, "params": [],
                "lr": lr * (encoder_lr_mult if part == "encoder" else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(p)
    order = ("encoder", "encoder_no_decay", "decoder", "decoder_no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(model: nn.Module, *, name: str = "sgd", lr: float,
                    weight_decay: float = 1e-4, momentum: float = 0.9,
                    betas: Iterable[float] = (0.9, 0.999),
                    encoder_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD (momentum, no Nesterov) or AdamW over ``param_groups(model)``."""
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, encoder_lr_mult=encoder_lr_mult)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=False)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"unknown optimizer {name!r}; valid: 'sgd', 'adamw'")


SCHEDULES = ("poly", "cosine", "constant")


class LRFactor:
    """The multiplier of the base lr at iteration ``it``; a callable object, so
    LambdaLR keeps its settings in ``state_dict`` (plain numbers and a string)."""

    def __init__(self, name: str, total_iters: int, warmup_iters: int = 0, power: float = 0.9,
                 min_lr_ratio: float = 0.0, warmup_ratio: float = 0.1):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
        if not 0 <= warmup_iters < total_iters:
            raise ValueError(f"need 0 <= warmup_iters ({warmup_iters}) < total_iters ({total_iters})")
        self.name, self.total_iters, self.warmup_iters = name, int(total_iters), int(warmup_iters)
        self.power, self.min_lr_ratio, self.warmup_ratio = float(power), float(min_lr_ratio), float(warmup_ratio)

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        t = min(1.0, (it - self.warmup_iters) / (self.total_iters - self.warmup_iters))
        if self.name == "poly":
            decay = (1.0 - t) ** self.power
        elif self.name == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            return 1.0
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, *, name: str = "poly", total_iters: int,
                    warmup_iters: int = 0, power: float = 0.9, min_lr_ratio: float = 0.0,
                    warmup_ratio: float = 0.1) -> LambdaLR:
    """LambdaLR over every group (so the encoder multiplier holds throughout)."""
    factor = LRFactor(name, total_iters, warmup_iters, power, min_lr_ratio, warmup_ratio)
    return LambdaLR(optimizer, factor)


class ScheduleChangeError(ValueError):
    """A resumed run asked for a schedule that the saved one cannot turn into."""

    def __init__(self, setting: str, saved, now):
        super().__init__(f"schedule setting {setting!r} changed {saved} -> {now}")
        self.setting, self.saved, self.now = setting, saved, now


def restore_scheduler(scheduler: LambdaLR, state: dict, follow=("total_iters",)) -> dict:
    """Load a saved `build_scheduler` state into `scheduler`, which was built from
    the settings wanted now; returns {setting: (saved, now)} for those that changed.

    The position (iterations done) comes from `state`; the schedule is this
    scheduler's own when only settings in `follow` changed (a longer run: the
    decay stretches to the new end from where the run stands), else
    ScheduleChangeError. The optimizer's lrs are set from the followed schedule,
    so the next step already uses it; unchanged settings give the saved lrs bit
    for bit. LambdaLR would instead restore the saved factor over ours."""
    factors = scheduler.lr_lambdas
    saved = dict(state["lr_lambdas"][0] or {})
    changed = {k: (saved.get(k), v) for k, v in vars(factors[0]).items() if saved.get(k) != v}
    if list(state["base_lrs"]) != list(scheduler.base_lrs):
        changed["base_lrs"] = (list(state["base_lrs"]), list(scheduler.base_lrs))
    for setting, (old, new) in changed.items():
        if setting not in follow:
            raise ScheduleChangeError(setting, old, new)
    scheduler.load_state_dict({**state, "lr_lambdas": [dict(vars(f)) for f in factors]})
    lrs = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, factors)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    return changed
