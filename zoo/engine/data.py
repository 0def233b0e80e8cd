"""The training data stream and the evaluation loader.

`StreamSampler` and `SeededSamples` make the training batches a pure
function of (seed, samples already seen), so a resumed run draws exactly the
batches and augmentations the uninterrupted one would have; `val_loader`
shards evaluation. A recipe's dataset comes from `zoo.data.make_dataset`.
Loader workers are capped at the CPU cores the process may use, and ignore
Ctrl-C, which the trainer answers (`zoo.engine.runtime.StopRequest`).
"""
from __future__ import annotations

import os
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset


class StreamSampler(Sampler):
    """Endless batches of (index, sample seed) for one rank.

    The stream is the concatenation of epoch permutations, epoch e drawn from
    (seed, e); it is cut into global batches of `batch_size * world_size`
    (a batch may straddle two epochs) and rank r takes its slice. Sample s of
    the stream is the same whatever the batch size and number of processes,
    so starting at `start` samples continues the stream of the run that
    stopped there, even with another number of processes.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.n, self.batch, self.seed, self.start = n, batch_size, seed, start
        self.rank, self.world = rank, world_size
        self.global_batch = batch_size * world_size
        if self.global_batch > n:
            raise ValueError(f"data.batch_size={batch_size} x {world_size} process(es) exceeds the "
                             f"{n} training images")

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        first = self.start + self.rank * self.batch
        perms: dict[int, list[int]] = {}
        while True:
            batch = []
            for s in range(first, first + self.batch):
                epoch, q = divmod(s, self.n)
                if epoch not in perms:
                    perms = {e: p for e, p in perms.items() if e >= epoch - 1}
                    perms[epoch] = self._perm(epoch)
                batch.append((perms[epoch][q], (self.seed, epoch, q)))
            yield batch
            first += self.global_batch


class SeededSamples(Dataset):
    """Applies the dataset's transform with a seed given per sample, so an
    augmentation depends on the sample's place in the stream, not on which
    worker process drew it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, (seed, epoch, position) = key
        image, mask, name = self.dataset.load(index)
        transform = self.dataset.transform
        transform.set_random_seed(int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0]))
        out = transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"].long(), "name": name}


def spread(n: int, count: int | None) -> list[int]:
    """`count` indices spread evenly over range(n) (all of them when count is None or >= n):
    a dataset listed sequence by sequence is sampled across its sequences."""
    if count is None or count >= n:
        return list(range(n))
    return sorted({int(i * n / count) for i in range(count)})


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask, as torch's DataLoader counts them)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> tuple[int, str | None]:
    """(workers, a note when capped): more loader workers than cores only make them
    compete (and torch warns about it on every loader)."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested, None
    return cpus, (f"data.num_workers={requested} capped at {cpus}, the CPU cores this process "
                  "may use")


def ignore_sigint(worker_id: int = 0) -> None:
    """A loader worker's init: Ctrl-C reaches the whole process group, and a worker it
    killed would fail the step the trainer means to finish and checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def val_loader(dataset, data, eval_cfg, dist_info) -> DataLoader:
    if eval_cfg.max_images is not None:
        dataset = Subset(dataset, range(min(eval_cfg.max_images, len(dataset))))
    # Shard without padding (a DistributedSampler would count padded images twice).
    indices = list(range(dist_info.rank, len(dataset), dist_info.world_size))
    workers = min(loader_workers(data.num_workers)[0], 2)
    return DataLoader(Subset(dataset, indices), batch_size=eval_cfg.batch_size, shuffle=False,
                      num_workers=workers, worker_init_fn=ignore_sigint if workers else None,
                      pin_memory=data.pin_memory and torch.cuda.is_available())
