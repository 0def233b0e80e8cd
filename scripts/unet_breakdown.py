"""The zoo U-Net against smp's, part by part: forward + backward time and
forward GFLOPs of the encoder, each decoder stage (with the zoo upsampler
alone beside it) and the classifier, each timed on the inputs it receives in
the whole model. A one-off investigation (BENCHMARKS.md, "block by block"),
kept beside the package rather than in it.

    python scripts/unet_breakdown.py --encoder resnet18 --upsample nearest --size 256 256 \\
        --batch 4 --threads 1 --iters 2
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from zoo.lab.bench import BenchSpec, build_zoo
from zoo.lab.counterparts import build_smp
from zoo.lab.timing import time_steps


def captured_inputs(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor) -> dict:
    """The (args, kwargs) each of `modules` receives in one eval forward of `model`."""
    seen, handles = {}, []
    for name, m in modules.items():
        def keep(mod, args, kwargs, name=name):
            seen.setdefault(name, (args, kwargs))
        handles.append(m.register_forward_pre_hook(keep, with_kwargs=True))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return seen


def time_part(module: nn.Module, args, kwargs, iters: int) -> tuple[float, float]:
    """(median ms of forward + backward, forward GFLOPs) of one module on captured inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    def leaf(v):
        return v.detach().requires_grad_(v.is_floating_point()) if isinstance(v, torch.Tensor) else v

    def tensors(out):
        if isinstance(out, torch.Tensor):
            return [out]
        if isinstance(out, (list, tuple)):
            return [t for o in out for t in tensors(o)]
        return []

    args = [[leaf(t) for t in a] if isinstance(a, list) else leaf(a) for a in args]
    kwargs = {k: leaf(v) for k, v in kwargs.items()}
    module.train()
    with FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)

    def step():
        outs = tensors(module(*args, **kwargs))
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    step()
    return 1e3 * statistics.median(time_steps(step, iters, lambda: None)), counter.get_total_flops() / 1e9


def unet_breakdown(spec: BenchSpec, iters: int = 5) -> list[dict]:
    """Forward + backward time and GFLOPs of each part of the zoo U-Net and of
    smp's, on the inputs each part sees (CPU, fp32): encoder, every decoder
    stage (with the zoo upsampler alone beside it) and the classifier."""
    if spec.arch != "unet":
        raise ValueError(f"the breakdown compares U-Nets, not {spec.arch}")
    ours = build_zoo(spec)
    theirs, _, _ = build_smp(spec, ours)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(spec.batch, 3, *spec.size, generator=gen)
    parts_z, parts_s = {"encoder": ours.encoder}, {"encoder": theirs.encoder}
    for i, (stage, block) in enumerate(zip(ours.head.stages, theirs.decoder.blocks)):
        parts_z[f"stage {i}"], parts_s[f"stage {i}"] = stage, block
        parts_z[f"stage {i} upsampler"] = stage.up
    parts_z["classifier"], parts_s["classifier"] = ours.head.classifier, theirs.segmentation_head
    got_z, got_s = captured_inputs(ours, parts_z, x), captured_inputs(theirs, parts_s, x)
    rows = []
    for name in parts_z:
        row = {"part": name}
        row["zoo_ms"], row["zoo_gflops"] = time_part(parts_z[name], *got_z[name], iters)
        if name in parts_s:
            row["smp_ms"], row["smp_gflops"] = time_part(parts_s[name], *got_s[name], iters)
        rows.append(row)
    return rows


def format_breakdown(rows: list[dict]) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| part | zoo fwd+bwd ms | smp fwd+bwd ms | zoo fwd GFLOPs | smp fwd GFLOPs |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['zoo_ms']:.1f} | {num(r.get('smp_ms'), '.1f')} | "
                     f"{r['zoo_gflops']:.2f} | {num(r.get('smp_gflops'), '.2f')} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--upsample", default="nearest")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--iters", type=int, default=5, help="timed steps per part")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = BenchSpec("unet", args.encoder, args.upsample, size=tuple(args.size), batch=args.batch,
                     num_classes=args.num_classes)
    print(f"unet / {spec.encoder} / {spec.upsample}, batch {spec.batch}, "
          f"{spec.size[0]}x{spec.size[1]}: forward + backward per part")
    print(format_breakdown(unet_breakdown(spec, iters=args.iters)))


if __name__ == "__main__":
    main()
