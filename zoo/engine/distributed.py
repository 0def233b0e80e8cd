"""torchrun / DistributedDataParallel plumbing.

One process per device, launched by torchrun, which sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT:

    # one machine, 4 processes (GPUs, or CPU processes with gloo)
    torchrun --nproc_per_node=4 tools/train.py recipe.yaml --run-dir runs/x

    # two machines with 8 GPUs each; the same command on both, NODE0 being
    # an address of the first machine that the second can reach
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-id=job1 --rdzv-backend=c10d \
        --rdzv-endpoint=NODE0:29500 tools/train.py recipe.yaml --run-dir /shared/runs/x

(or, with a fixed first machine: `--nnodes=2 --node_rank=0|1 --master_addr=NODE0
--master_port=29500`). `setup` joins the process group: nccl on CUDA, gloo on
CPU. `data.batch_size` is per process: the global batch is batch_size x
processes. Rank 0 alone writes logs, checkpoints and pictures (after a
checkpoint, a barrier: no rank runs ahead of a half-written one); every rank
evaluates its shard of the validation set and the confusion matrices are
summed. Every rank reads the checkpoint when a run resumes, so on several
machines the run folder must be on a filesystem they all see (a rank that
finds another resume point than rank 0 stops the run, saying so).

`train.sync_bn` converts BatchNorm to SyncBatchNorm on GPUs; torch has no
SyncBatchNorm on CPU, where the switch is ignored with a one-line warning.

Resuming with another number of processes (run the same command with another
--nproc_per_node, same --run-dir): the model, optimiser and schedule states
are restored, the sample stream goes on from the sample where the run stopped
(the stream does not depend on the number of processes, see
`trainer.StreamSampler`), and the schedule goes on from the checkpoint's
iteration to `train.iters`. An iteration is one optimiser step, so with the
same `data.batch_size` the remaining iterations take a different global
batch; to keep it, scale `data.batch_size` (4 processes x 2 -> 2 x 4). It is
not bit for bit the run that never stopped: gradients are averaged in another
order and BatchNorm sees per-process batches of another size.

A rank that dies is noticed by torchrun, which stops the others. For launchers
that do not, every collective (and the initial rendezvous) gives up after
``ZOO_DIST_TIMEOUT`` seconds (default 1800) instead of waiting forever.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT_ENV = "ZOO_DIST_TIMEOUT"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun, even as its only process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def timeout() -> datetime.timedelta:
    value = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: must be positive")
    return datetime.timedelta(seconds=seconds)


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.elastic) names its run in every process it starts."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes; a no-op for a plain single process.
    `torchrun --nproc_per_node=1` joins too, so one GPU runs the path many GPUs run
    (nccl, DDP, SyncBatchNorm), the way a multi-GPU run is rehearsed on one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")),
                    launched=True)
    if not initialized():
        kwargs = {"backend": "nccl" if device.type == "cuda" else "gloo", "timeout": timeout()}
        if device.type == "cuda":
            kwargs["device_id"] = device  # binds the rank to its GPU (barriers need it)
        dist.init_process_group(**kwargs)
    return info


class DeviceError(ValueError):
    """A device the recipe or command line asks for that this machine does not have."""


def _no_cuda_reason() -> str:
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"torch {torch.__version__}, {built}"


def device_for(requested: str, info_local_rank: int | None = None, what: str = "train.device") -> torch.device:
    """`auto` picks CUDA when present (one GPU per process under torchrun). `what`
    names the setting in errors (`train.device`, `--device`)."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if info_local_rank is None else info_local_rank
    asked, sep = requested, " " if what.startswith("-") else "="
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and (int(os.environ.get("WORLD_SIZE", "1")) > 1 or launched_by_torchrun()):
        requested = f"cuda:{local}"  # an index, which the process group's device_id needs, one process too
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"{what}{sep}{asked}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{what}{sep}{asked}: CUDA is not available on this machine "
                              f"({_no_cuda_reason()}); use {what}{sep}cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{what}{sep}{asked}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
        torch.cuda.set_device(device)
    return device


def sync_batchnorm(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """BatchNorm statistics over the global batch (`train.sync_bn`).

    torch's SyncBatchNorm runs on GPUs only (DistributedDataParallel refuses
    it on CPU), so on CPU each process keeps normalising over its own batch,
    and rank 0 says so in one line.
    """
    if not info.enabled:
        return model
    if device.type == "cpu":
        if info.is_main:
            print("warning: train.sync_bn=true is ignored on CPU (torch's SyncBatchNorm needs GPUs); "
                  "each process normalises over its own batch", file=sys.stderr, flush=True)
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier() -> None:
    if initialized():
        dist.barrier()


def cleanup() -> None:
    if initialized():
        dist.destroy_process_group()


def broadcast_object(obj, src: int = 0):
    if not initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` outside torch.distributed."""
    if not initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Give every rank rank `src`'s buffers (BatchNorm running statistics).

    DDP does this at the start of every training forward; after the last one
    each rank holds statistics of its own batch, so evaluation and
    checkpoints call this first, and all ranks then hold one model.
    """
    if initialized():
        for buf in model.buffers():
            dist.broadcast(buf, src)


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` holds on every rank (so that all ranks stop together)."""
    if not initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_true(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag OR-ed over ranks, in one collective (a stop or a checkpoint that every
    rank must take at the same iteration)."""
    if not initialized():
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; the input is left as it is)."""
    if not initialized():
        return value
    t = value.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def check_same(what: str, value) -> None:
    """Fail on every rank, naming the values, unless all ranks hold the same `value`."""
    if not initialized():
        return
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        shown = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise RuntimeError(f"processes disagree on {what} ({shown})")
