"""What a run can promise about repeating itself, and the means to keep it.

Seeding, deterministic mode, the RNG states a checkpoint carries, and the
`determinism` record written into every checkpoint's meta.json. What holds:

- Always: the same seed gives the same sample order and augmentations
  (`zoo/engine/data.py`), resumed or not, with any number of workers.
- `train.deterministic=true`: torch is asked for deterministic kernels
  (`use_deterministic_algorithms(warn_only=True)`, cuBLAS workspace, no cuDNN
  autotuning). Then a run repeated or resumed with the same torch build,
  device type, thread count and number of processes ends with bit-identical
  weights, unless an operation the model uses has no deterministic kernel on
  that device. Max-unpooling is such an operation on CPU and CUDA; on CUDA
  so are the backward passes of bilinear upsampling and adaptive average
  pooling and (depending on the torch version) scatter / index adds. torch only warns about them (with
  `warn_only=False` those models could not train at all); the trainer records
  which ones ran in the first iteration, and the record then promises the
  same data stream only.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import warnings

import numpy as np
import torch

_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def reseed_after_build(seed: int) -> None:
    """Re-seed the global RNGs from the run's seed (a derived one) once the model is
    built. What training then draws from them (dropout masks, ...) no longer depends
    on how many numbers the model's initialisation drew, so two runs of one seed whose
    heads differ (an ablation's upsamplers) draw the same masks. A resumed run
    restores the checkpoint's RNG states after this, as before."""
    derived = int(np.random.SeedSequence([seed, 0x7472_6169]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@contextlib.contextmanager
def watch_nondeterministic(found: set):
    """Adds to `found` the operations torch warns have no deterministic kernel
    (deterministic mode, `warn_only=True`); other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if m := _NONDETERMINISTIC.match(str(w.message)):
            found.add(m[1])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def determinism_record(device: torch.device, deterministic: bool, *, threads: int, processes: int,
                       nondeterministic_ops=()) -> dict:
    """The `determinism` entry of meta.json: the conditions and what is guaranteed under them."""
    ops = sorted(nondeterministic_ops)
    record = {"device": device.type, "torch": torch.__version__, "deterministic": bool(deterministic),
              "threads": threads, "processes": processes}
    where = f"torch {torch.__version__} on {device.type}"
    if device.type == "cuda":
        record.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                      gpu=torch.cuda.get_device_name(device))
        where += f" ({record['gpu']}, CUDA {record['cuda']}, cuDNN {record['cudnn']})"
    else:
        where += f" with {threads} thread{'s' if threads != 1 else ''}"
    where += f", {processes} process{'es' if processes != 1 else ''}"
    if not deterministic:
        guarantee = ("same sample order and augmentations only: train.deterministic is off, so "
                     "weights differ between runs")
    elif ops:
        guarantee = (f"same sample order and augmentations only: {', '.join(ops)} "
                     f"{'has' if len(ops) == 1 else 'have'} no deterministic implementation on "
                     f"{device.type}, so weights differ between runs in the last bits")
    else:
        guarantee = f"bit-identical weights when repeated or resumed with {where}"
    return {**record, "nondeterministic_ops": ops, "guarantee": guarantee}
