"""Timing steps and sampling memory, for every benchmark of the lab.

- `time_steps(step, n, sync)`: seconds per call, synchronised before and after
  each call (`device_sync(device)` waits for CUDA; a no-op elsewhere);
- `summarize(times, batch)`: median, 25th/75th percentiles and images per second;
- `median_ms(step, runs, warmup, sync)`: warm up, then the median of timed calls;
- `RssPeak`: the highest resident set size a thread sees (every 2 ms, from
  /proc) while a block runs; `rss_bytes()` is None where /proc is missing;
  `release_free_memory()` collects garbage and hands freed heap pages back,
  so the next baseline is the live set.
"""
from __future__ import annotations

import ctypes
import gc
import os
import statistics
import threading
import time


def _no_sync():
    pass


def device_sync(device):
    """A callable that waits for `device`'s queued work (CUDA), else does nothing."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return _no_sync


def time_steps(step, n: int, sync=_no_sync) -> list[float]:
    """Seconds per call of `step`, one entry per call."""
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float], batch: int) -> dict:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    med = statistics.median(times)
    return {"img_s": batch / med, "ms": 1e3 * med, "ms_p25": 1e3 * q[0], "ms_p75": 1e3 * q[2],
            "n": len(times)}


def median_ms(step, runs: int = 10, warmup: int = 3, sync=_no_sync) -> float:
    """Median wall time of one call of `step` after `warmup` untimed calls, in milliseconds."""
    for _ in range(warmup):
        step()
    return 1e3 * statistics.median(time_steps(step, max(1, runs), sync))


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> None:
    gc.collect()
    try:  # hand freed heap pages back, so the next baseline is the live set
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssPeak:
    """Highest RSS seen by a sampling thread while the block runs (`peak`, `base` in bytes)."""

    def __init__(self, every_s: float = 0.002):
        self.every_s = every_s

    def __enter__(self):
        self.peak = self.base = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
