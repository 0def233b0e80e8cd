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
is missing). FLOPs come from `zoo.models.profile.count_flops` (one forward pass, one
image); model FLOP utilisation on CUDA counts a training step as 3x the
forward and divides by the GPU's dense bf16 peak.

The smp counterparts: `zoo.lab.counterparts`; step timing and the RSS sampler:
`zoo.lab.timing`; machine facts and GPU peaks: `zoo.common.machine`.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo import factory
from zoo.common.machine import machine_info, peak_bf16_tflops
from zoo.engine.recipe import apply_overrides
from zoo.lab.counterparts import build_smp
from zoo.lab.timing import RssPeak, release_free_memory, rss_bytes, summarize, time_steps
from zoo.models.profile import count_flops, count_params
from zoo.models.registry import builder_params

__all__ = ["BenchSpec", "Runner", "ROW_KEYS", "benchmark", "build_zoo", "format_table", "grid", "parse_model_args",
           "run_grid", "warm_up_and_measure_memory", "write_json"]

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


# ----------------------------------------------------------------------------- model and steps

def build_zoo(spec: BenchSpec) -> nn.Module:
    return factory.create(spec.arch, encoder=spec.encoder, upsample=spec.upsample,
                      num_classes=spec.num_classes, **spec.model_args)


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
            if self.aux_weight:  # an architecture without an auxiliary head trains its main loss only
                logits, aux = self.forward(self.x, aux=True)
                loss = F.cross_entropy(logits, self.y)
                if aux is not None:
                    loss = loss + self.aux_weight * F.cross_entropy(aux, self.y)
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
    release_free_memory()
    if rss_bytes() is None:
        for _ in range(warmup):
            runner.train_step()
        return None, "unavailable (no /proc)"
    with RssPeak() as mem:
        for _ in range(warmup):
            runner.train_step()
    return (mem.peak - mem.base) / 2**20, "cpu_rss_growth"


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
    if not 1 <= rounds <= iters:
        raise ValueError(f"--rounds {rounds}: models take turns 1 to --iters ({iters}) times, each "
                         "timing at least one step")
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
    times = {id(r): {"train": [], "infer": []} for r, _ in entries}
    for r in range(rounds):  # iters steps in all, split as evenly as they go
        steps = iters // rounds + (r < iters % rounds)
        for row, runner in entries:
            times[id(row)]["train"] += time_steps(runner.train_step, steps, runner.sync)
        for row, runner in entries:
            times[id(row)]["infer"] += time_steps(runner.infer_step, steps, runner.sync)

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
    release_free_memory()
    return rows


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
    return apply_overrides({}, list(items or ()))


def grid(archs, encoders, upsamplers, model_args: dict | None = None, **settings) -> list[BenchSpec]:
    """One spec per (arch, encoder, upsampler). Each architecture gets the
    `model_args` its builder takes; a key no architecture takes is an error."""
    import itertools

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
