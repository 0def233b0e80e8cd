"""torchrun / DistributedDataParallel plumbing.

`torchrun --nproc_per_node=N tools/train.py recipe.yaml` sets RANK, WORLD_SIZE
and LOCAL_RANK; `setup` then joins the process group (nccl on CUDA, gloo on
CPU). Rank 0 alone writes logs, checkpoints and pictures; evaluation sums
confusion matrices over ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def device_for(requested: str, info_local_rank: int | None = None) -> torch.device:
    """`auto` picks CUDA when present (one GPU per process under torchrun)."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if info_local_rank is None else info_local_rank
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        requested = f"cuda:{local}"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={requested!r} but CUDA is not available here")
        torch.cuda.set_device(device)
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
