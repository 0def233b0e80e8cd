"""What each registered upsampler costs inside one architecture, relative to bilinear.

    segzoo benchmark --upsamplers --arch unet --encoder resnet18 --size 360 480 --batch 2

One model per upsampler in `decoders.UPSAMPLERS` (those registered when it
runs, so new ones appear by themselves), all else equal, on one random batch:

- parameters of the whole model and of its upsamplers (every `Upsampler`
  module of the model);
- GFLOPs of one forward pass of one image (`zoo.models.profile.count_flops`,
  PyTorch's `FlopCounterMode`: convolutions and matrix products; the
  elementwise multiply-adds of a reassembly are not counted);
- training step (forward, cross-entropy, backward, SGD step; `zoo.lab.bench.Runner`)
  and inference latency (eval mode, `inference_mode`): the models take turns,
  one step each per round, so load from other processes falls on all alike;
  medians of wall time and of the process's CPU time, and their ratios to the
  baseline's medians (bilinear). On a machine other processes share, the CPU
  time of a one-thread run is the steadier measure of the work a step does;
- peak memory of one training step: the highest total of bytes allocated by
  PyTorch during the step above what was live before it (activations,
  gradients and temporaries; weights and optimiser state excluded), read from
  the allocator's own events (`torch.profiler`, `profile_memory=True`) on the
  CPU and from `torch.cuda.max_memory_allocated` on CUDA; and its ratio.

Upsamplers that cannot be built in the architecture (`unpool` needs an encoder
that max-pools) get a row with the reason instead of numbers.
"""
from __future__ import annotations

import itertools
import statistics
import time

import torch

import decoders  # noqa: F401  (imports every built-in upsampler module)
from decoders.upsample import UPSAMPLERS, Upsampler, check_upsampler
from zoo.common.machine import machine_info
from zoo.lab.bench import BenchSpec, Runner, build_zoo
from zoo.lab.timing import time_steps
from zoo.models.profile import count_flops, count_params
from zoo.models.registry import builder_params

BASELINE = "bilinear"
MEMORY_KIND = {"cpu": "bytes allocated by torch during one training step, above the live set before it "
                      "(torch.profiler allocator events)",
               "cuda": "torch.cuda.max_memory_allocated during one training step, above the live set "
                       "before it"}


def registered_upsamplers() -> list[str]:
    return list(UPSAMPLERS)


def upsampler_params(model) -> int:
    """Parameters of the model's `Upsampler` modules (each counted once)."""
    ups = [m for m in model.modules() if isinstance(m, Upsampler)]
    params = {id(p): p.numel() for m in ups for p in m.parameters()}
    return sum(params.values())


def step_peak_bytes(runner: Runner) -> int:
    """Peak bytes allocated during one training step above the bytes live before it."""
    if runner.device.type == "cuda":
        runner.sync()
        base = torch.cuda.memory_allocated(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
        runner.train_step()
        runner.sync()
        return torch.cuda.max_memory_allocated(runner.device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        runner.train_step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def _build(spec: BenchSpec, x, y) -> tuple[dict, Runner | None]:
    row = {"upsample": spec.upsample, "arch": spec.arch, "encoder": spec.encoder,
           "size": list(spec.size), "batch": spec.batch, "device": spec.device}
    try:
        model = build_zoo(spec)
    except (ValueError, TypeError) as e:
        return {**row, "error": str(e).splitlines()[0]}, None
    runner = Runner(model, spec, x, y)
    row.update(params_m=count_params(model) / 1e6, upsampler_params_m=upsampler_params(model) / 1e6,
               gflops=count_flops(model, spec.size) / 1e9)
    return row, runner


def measure(arch: str = "unet", encoder: str = "resnet18", size=(360, 480), batch: int = 2, *,
            upsamplers=None, num_classes: int = 12, model_args: dict | None = None,
            device: str = "cpu", iters: int = 5, warmup: int = 1, seed: int = 0, log=print) -> dict:
    """{"meta": ..., "rows": [...]}: one row per upsampler (see the module docstring)."""
    builder_params(arch)  # an unknown architecture or upsampler is the user's error, before any work
    names = list(upsamplers or registered_upsamplers())
    for name in names:
        check_upsampler(name)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *size, generator=gen)
    y = torch.randint(0, num_classes, (batch, *size), generator=gen)

    entries = []
    for name in names:
        spec = BenchSpec(arch, encoder, name, size=size, batch=batch, device=device,
                         num_classes=num_classes, model_args=dict(model_args or {}))
        row, runner = _build(spec, x, y)
        if runner is None:
            log(f"{name}: not built ({row['error']})")
        else:
            for _ in range(max(1, warmup)):  # the first step allocates the optimiser's state
                runner.train_step()
                runner.infer_step()
            row["peak_mem_mb"] = step_peak_bytes(runner) / 2**20
            log(f"{name}: built, {row['params_m']:.2f} M parameters, peak {row['peak_mem_mb']:.0f} MB")
        entries.append((row, runner, {"train": [], "infer": [], "train_cpu": [], "infer_cpu": []}))

    timed = [e for e in entries if e[1] is not None]
    for r in range(max(1, iters)):
        for mode in ("train", "infer"):
            for row, runner, times in timed:
                step = runner.train_step if mode == "train" else runner.infer_step
                cpu = time.process_time()
                times[mode] += time_steps(step, 1, runner.sync)
                times[f"{mode}_cpu"].append(time.process_time() - cpu)
        log(f"round {r + 1}/{iters} done")
    for row, _, times in timed:
        for key, values in times.items():
            row[f"{key}_ms"] = 1e3 * statistics.median(values)
        row["steps"] = len(times["train"])

    rows = [e[0] for e in entries]
    base = next((r for r in rows if r["upsample"] == BASELINE and "error" not in r), None)
    for row in rows:
        for key, ratio in (("train_ms", "train_x"), ("train_cpu_ms", "train_cpu_x"), ("infer_ms", "infer_x"),
                           ("infer_cpu_ms", "infer_cpu_x"), ("peak_mem_mb", "peak_x")):
            row[ratio] = row[key] / base[key] if base and key in row and base[key] else None
    meta = {**machine_info(), "baseline": BASELINE, "memory": MEMORY_KIND[torch.device(device).type],
            "iters": iters, "warmup": warmup}
    return {"meta": meta, "rows": rows}


def format_table(report: dict) -> str:
    """A Markdown table, one line per upsampler."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    base = report["meta"]["baseline"]
    head = (f"| upsampler | params (M) | upsamplers' params (M) | GFLOPs | train ms | train x {base} | "
            f"train CPU x {base} | infer ms | infer x {base} | infer CPU x {base} | peak MB | "
            f"peak x {base} |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        if "error" in r:
            reason = " ".join(r["error"].split()).replace("|", "\\|")  # the whole refusal: it says what to use
            lines.append(f"| {r['upsample']} | not built: {reason} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['upsample']} | {r['params_m']:.2f} | {r['upsampler_params_m']:.3f} | {r['gflops']:.3g} | "
            f"{num(r.get('train_ms'), '.0f')} | {num(r.get('train_x'), '.2f')} | "
            f"{num(r.get('train_cpu_x'), '.2f')} | {num(r.get('infer_ms'), '.0f')} | "
            f"{num(r.get('infer_x'), '.2f')} | {num(r.get('infer_cpu_x'), '.2f')} | "
            f"{num(r.get('peak_mem_mb'), '.0f')} | {num(r.get('peak_x'), '.2f')} |")
    return "\n".join(lines)
