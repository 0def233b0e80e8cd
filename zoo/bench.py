"""Training and inference throughput of zoo models, beside segmentation_models_pytorch.

For one configuration (architecture, encoder, upsampler, input size, batch,
device, precision) a benchmark builds the zoo model and, when asked, the
matching smp model, feeds both the same random batch and times:

- a training step: forward, cross-entropy, backward, SGD step (momentum 0.9,
  the recipe default), in train mode;
- inference: forward in eval mode under `torch.inference_mode`.

Each is warmed up, then timed step by step (`torch.cuda.synchronize` after
every step on CUDA); rows report the median step time, its 25th and 75th
percentiles and images per second (batch / median). With `rounds > 1` the
models take turns, so drift on a shared machine hits both alike.

Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the warm-up
training steps (weights, gradients, optimizer state and activations); on the CPU the
growth of the resident set size over the warm-up training steps, sampled every
2 ms from /proc (gradients, optimizer state and activations; None where /proc
is missing). FLOPs come from `zoo.profile.count_flops` (one forward pass, one
image); model FLOP utilisation on CUDA counts a training step as 3x the
forward and divides by the GPU's dense bf16 peak.

The smp counterpart of `unet` is `smp.Unet` with the same encoder (smp's own
implementation where it has one, else `tu-<timm name>`), decoder widths and
interpolation (comparable for `nearest` and `bilinear`); of `pspnet`,
`smp.PSPNet` at the same depth, output stride and width, marked not
comparable (its fuse convolution is 1x1, its classifier 3x3, no auxiliary
head). FCN and DeconvNet have no smp counterpart.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo.profile import count_flops, count_params

# Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA datasheets); the first name
# contained in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "H800": 989,
    "A100": 312, "A800": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125,
    "RTX 4090": 165, "RTX 3090": 71, "V100": 125,
}
SMP_COUNTERPARTS = ("unet", "pspnet")
ROW_KEYS = ("impl", "arch", "encoder", "upsample", "size", "batch", "device", "train_img_s",
            "infer_img_s", "peak_mem_mb")


@dataclass
class BenchSpec:
    arch: str
    encoder: str
    upsample: str
    size: tuple[int, int] = (256, 256)
    batch: int = 4
    device: str = "cpu"
    amp: str = "off"             # off | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    num_classes: int = 21
    aux_weight: float = 0.0      # > 0 trains the auxiliary head too (PSPNet)
    model_args: dict = field(default_factory=dict)

    def __post_init__(self):
        self.size = tuple(int(v) for v in self.size)
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be off, bf16 or fp16, got {self.amp!r}")
        if self.amp == "fp16" and not self.device.startswith("cuda"):
            raise ValueError("amp=fp16 needs CUDA; use bf16 or off on the CPU")

    def eager_fp32(self) -> "BenchSpec":
        return BenchSpec(**{**asdict(self), "amp": "off", "channels_last": False, "compile": False})


# ----------------------------------------------------------------------------- models

def build_zoo(spec: BenchSpec) -> nn.Module:
    import zoo
    return zoo.create(spec.arch, encoder=spec.encoder, upsample=spec.upsample,
                      num_classes=spec.num_classes, **spec.model_args)


def smp_encoder_name(encoder: str) -> str:
    """smp's own encoder where it has one of that name, else its timm wrapper."""
    from segmentation_models_pytorch.encoders import get_encoder_names
    return encoder if encoder in get_encoder_names() else f"tu-{encoder}"


def build_smp(spec: BenchSpec, zoo_model: nn.Module) -> tuple[nn.Module, bool, str]:
    """The smp model matching `spec` and the built zoo model: (model, comparable, note).
    Raises LookupError where smp has no counterpart."""
    if spec.arch not in SMP_COUNTERPARTS:
        raise LookupError(f"smp has no counterpart of {spec.arch} (only of {', '.join(SMP_COUNTERPARTS)})")
    import segmentation_models_pytorch as smp
    enc = smp_encoder_name(spec.encoder)
    reductions = zoo_model.encoder.reductions
    if spec.arch == "unet":
        widths = [stage.convs[-1][0].out_channels for stage in zoo_model.head.stages]
        resize = spec.upsample in ("nearest", "bilinear")
        model = smp.Unet(enc, encoder_weights=None, encoder_depth=len(widths),
                         decoder_channels=widths, classes=spec.num_classes,
                         decoder_interpolation=spec.upsample if resize else "nearest")
        comparable = resize and reductions[-1] == 32
        note = (f"smp.Unet({enc}, decoder_channels={tuple(widths)}, "
                f"{'interpolation=' + spec.upsample if resize else 'nearest: smp cannot ' + spec.upsample}); "
                "with a resize both concatenate the resized feature with the skip and convolve "
                "3x3 twice, and both classify with a 3x3 convolution: the same layers")
        return model, comparable, note
    os_ = reductions[-1]
    head_c = zoo_model.head.fuse[0][0].out_channels
    model = smp.PSPNet(enc, encoder_weights=None, encoder_depth=len(reductions),
                       output_stride=os_, psp_out_channels=head_c, upsampling=os_,
                       classes=spec.num_classes)
    note = (f"smp.PSPNet({enc}, depth {len(reductions)}, OS {os_}, width {head_c}): 1x1 fuse conv "
            f"and 3x3 classifier (zoo: 3x3 and 1x1), dropout 0.2, bilinear x{os_} resize, no aux head")
    return model, False, note


# ----------------------------------------------------------------------------- timing

class Runner:
    """One model, its optimizer and a fixed batch; `train_step` and `infer_step`."""

    def __init__(self, model: nn.Module, spec: BenchSpec, x: torch.Tensor, y: torch.Tensor,
                 aux: bool = False):
        self.device = torch.device(spec.device)
        fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt)
        self.x = x.to(self.device).contiguous(memory_format=fmt)
        self.y = y.to(self.device)
        self.aux_weight = spec.aux_weight if aux else 0.0
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.amp)
        self.autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype
                         else nullcontext())
        self.scaler = torch.amp.GradScaler(self.device.type) if spec.amp == "fp16" else None
        self.forward = torch.compile(self.model) if spec.compile else self.model

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            if self.aux_weight:
                logits, aux = self.forward(self.x, aux=True)
                loss = F.cross_entropy(logits, self.y) + self.aux_weight * F.cross_entropy(aux, self.y)
            else:
                loss = F.cross_entropy(self.forward(self.x), self.y)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def infer_step(self):
        self.model.eval()
        with torch.inference_mode(), self.autocast:
            self.forward(self.x)


def time_steps(step, n: int, sync) -> list[float]:
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


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory():
    gc.collect()
    try:  # hand freed heap pages back, so the next baseline is the live set
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssPeak:
    """Highest RSS seen by a sampling thread while the block runs."""

    def __enter__(self):
        self.peak = self.base = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def warm_up_and_measure_memory(runner: Runner, warmup: int) -> tuple[float | None, str]:
    """Run the warm-up training steps; (peak memory in MB, what it measures)."""
    warmup = max(1, warmup)
    if runner.device.type == "cuda":
        runner.sync()
        torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(warmup):
            runner.train_step()
        runner.sync()
        return torch.cuda.max_memory_allocated(runner.device) / 2**20, "cuda_max_allocated"
    _release_free_memory()
    if _rss_bytes() is None:
        for _ in range(warmup):
            runner.train_step()
        return None, "unavailable (no /proc)"
    with _RssPeak() as mem:
        for _ in range(warmup):
            runner.train_step()
    return (mem.peak - mem.base) / 2**20, "cpu_rss_growth"


def peak_bf16_tflops(gpu_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its `torch.cuda.get_device_name`; None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in gpu_name:
            return float(tflops)
    return None


# ----------------------------------------------------------------------------- benchmark

def _base_row(impl: str, spec: BenchSpec, model: nn.Module, flops: int) -> dict:
    return {"impl": impl, "arch": spec.arch, "encoder": spec.encoder, "upsample": spec.upsample,
            "size": list(spec.size), "batch": spec.batch, "device": spec.device, "amp": spec.amp,
            "channels_last": spec.channels_last, "compile": spec.compile,
            "threads": torch.get_num_threads(), "params_m": count_params(model) / 1e6,
            "gflops": flops / 1e9}


def benchmark(spec: BenchSpec, *, against: str | None = None, iters: int = 10, warmup: int = 3,
              rounds: int = 1, smp_eager_fp32: bool = False, seed: int = 0,
              log=print) -> list[dict]:
    """Rows for the zoo model of `spec` and, with `against="smp"`, its smp
    counterpart, timed under the same settings or, with `smp_eager_fp32`, in
    eager fp32 (the baseline of the GPU target)."""
    if against not in (None, "smp"):
        raise ValueError(f"against must be None or 'smp', got {against!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(spec.batch, 3, *spec.size, generator=gen)
    y = torch.randint(0, spec.num_classes, (spec.batch, *spec.size), generator=gen)

    entries = []  # (row, runner); FLOPs counted once the model is on its device
    zoo_model = build_zoo(spec)
    runner = Runner(zoo_model, spec, x, y, aux=True)
    entries.append((_base_row("zoo", spec, zoo_model, count_flops(zoo_model, spec.size)), runner))
    if against == "smp":
        smp_spec = spec.eager_fp32() if smp_eager_fp32 else spec
        try:
            smp_model, comparable, note = build_smp(spec, zoo_model)
        except (LookupError, ImportError) as e:
            entries[0][0]["note"] = f"no smp row: {e}"
            log(f"[{spec.arch}/{spec.encoder}/{spec.upsample}] no smp row: {e}")
        else:
            runner = Runner(smp_model, smp_spec, x, y)
            row = _base_row("smp", smp_spec, smp_model, count_flops(smp_model, spec.size))
            row.update(comparable=comparable, note=note)
            entries.append((row, runner))

    for row, runner in entries:
        row["peak_mem_mb"], row["peak_mem_kind"] = warm_up_and_measure_memory(runner, warmup)
        for _ in range(max(1, warmup)):
            runner.infer_step()
    per_round = max(1, math.ceil(iters / rounds))
    times = {id(r): {"train": [], "infer": []} for r, _ in entries}
    for _ in range(rounds):
        for row, runner in entries:
            times[id(row)]["train"] += time_steps(runner.train_step, per_round, runner.sync)
        for row, runner in entries:
            times[id(row)]["infer"] += time_steps(runner.infer_step, per_round, runner.sync)

    rows = []
    for row, runner in entries:
        for kind in ("train", "infer"):
            s = summarize(times[id(row)][kind], spec.batch)
            row.update({f"{kind}_img_s": s["img_s"], f"{kind}_ms": s["ms"],
                        f"{kind}_ms_p25": s["ms_p25"], f"{kind}_ms_p75": s["ms_p75"],
                        f"{kind}_steps": s["n"]})
        peak = (peak_bf16_tflops(torch.cuda.get_device_name(runner.device))
                if runner.device.type == "cuda" else None)
        row["mfu_train"] = 3 * row["gflops"] * 1e9 * row["train_img_s"] / (peak * 1e12) if peak else None
        row["mfu_infer"] = row["gflops"] * 1e9 * row["infer_img_s"] / (peak * 1e12) if peak else None
        rows.append(row)
    if len(rows) == 2:  # our time over smp's: < 1 means the zoo is faster
        rows[1]["train_time_ratio"] = rows[0]["train_ms"] / rows[1]["train_ms"]
        rows[1]["infer_time_ratio"] = rows[0]["infer_ms"] / rows[1]["infer_ms"]
    del entries
    _release_free_memory()
    return rows


def machine_info() -> dict:
    import datetime
    import sys
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import segmentation_models_pytorch as smp
        info["smp"] = smp.__version__
    except ImportError:
        pass
    return info


def write_json(rows: list[dict], path, meta: dict | None = None) -> None:
    """{"meta": {...}, "rows": [...]}; every row has at least ROW_KEYS."""
    import json
    from pathlib import Path
    missing = [k for row in rows for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"rows miss keys {sorted(set(missing))}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"meta": meta or machine_info(), "rows": rows}, indent=1) + "\n")


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per row, the zoo/smp time ratios on smp lines."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = ("| impl | arch | encoder | upsample | size | batch | params (M) | GFLOPs | "
            "train img/s | train ms (p25-p75) | infer img/s | peak MB | MFU train | "
            "zoo/smp train time | zoo/smp infer time | comparable |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        size = "x".join(map(str, r["size"]))
        spread = f"{r['train_ms']:.0f} ({r['train_ms_p25']:.0f}-{r['train_ms_p75']:.0f})"
        comparable = "" if r["impl"] == "zoo" else ("yes" if r.get("comparable") else "no")
        lines.append(
            f"| {r['impl']} | {r['arch']} | {r['encoder']} | {r['upsample']} | {size} | {r['batch']} | "
            f"{r['params_m']:.2f} | {r['gflops']:.2f} | {r['train_img_s']:.2f} | {spread} | "
            f"{r['infer_img_s']:.2f} | {num(r['peak_mem_mb'], '.0f')} | "
            f"{num(r.get('mfu_train'), '.1%')} | {num(r.get('train_time_ratio'), '.2f')} | "
            f"{num(r.get('infer_time_ratio'), '.2f')} | {comparable} |")
    return "\n".join(lines)


def parse_model_args(items) -> dict:
    """`["k=v", ...]` -> {k: v}, values read as YAML the way recipe overrides are
    (`decoder_channels=[64,32,16,8,8]`, `head_channels=64`)."""
    from zoo.recipe import apply_overrides
    return apply_overrides({}, list(items or ()))


def grid(archs, encoders, upsamplers, model_args: dict | None = None, **settings) -> list[BenchSpec]:
    """One spec per (arch, encoder, upsampler). Each architecture gets the
    `model_args` its builder takes; a key no architecture takes is an error."""
    import itertools

    from zoo.registry import builder_params
    model_args = model_args or {}
    taken = {a: {k: v for k, v in model_args.items() if k in builder_params(a)} for a in archs}
    unused = set(model_args) - {k for t in taken.values() for k in t}
    if unused:
        raise ValueError(f"no architecture among {', '.join(archs)} takes {', '.join(sorted(unused))}")
    return [BenchSpec(a, e, u, model_args=taken[a], **settings)
            for a, e, u in itertools.product(archs, encoders, upsamplers)]


def run_grid(specs: list[BenchSpec], *, json_path=None, log=print, **options) -> list[dict]:
    """`benchmark` each spec, print the table, write the JSON rows if asked."""
    rows = []
    for spec in specs:
        log(f"benchmarking {spec.arch} / {spec.encoder} / {spec.upsample} at "
            f"{spec.size[0]}x{spec.size[1]}, batch {spec.batch}, {spec.device} ...")
        try:
            rows += benchmark(spec, log=log, **options)
        except (RuntimeError, ValueError) as e:  # out of memory, unbuildable pair: next one
            log(f"FAILED {spec.arch} / {spec.encoder} / {spec.upsample}: {type(e).__name__}: {e}")
    log(format_table(rows))
    for r in rows:
        if r.get("note"):
            log(f"note ({r['impl']} {r['arch']}/{r['encoder']}/{r['upsample']}): {r['note']}")
    if json_path:
        write_json(rows, json_path)
        log(f"wrote {len(rows)} rows to {json_path}")
    return rows
