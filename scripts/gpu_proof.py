"""The GPU path, proven in one command: everything written for CUDA and never
yet run on a GPU, run on one, in at most ten minutes, every figure kept.

    python scripts/gpu_proof.py --out runs/gpu_proof --data-root /data/camvid   # one CUDA GPU
    python scripts/gpu_proof.py --out /tmp/gpu_proof --dry-run                  # CPU: tiny, a few steps

Parts, in order (a part that needs CUDA says so and is skipped on a CPU):

1. `cuda_tests`: the test suite's CUDA-marked tests (`pytest -m cuda`); on a CPU
   they are only collected.
2. `throughput`: zoo vs segmentation_models_pytorch, U-Net and PSPNet on
   ResNet-50 at 512x512: training and inference images/s and model FLOP
   utilisation (zoo/lab/bench.py) in fp32 eager, bf16, bf16 + channels_last and
   bf16 + torch.compile (compile needs CUDA here).
3. `ddp`: `torchrun --nproc_per_node=1` through the trainer with
   `train.sync_bn=true` (nccl on CUDA; gloo on a CPU, where SyncBN does not
   exist): whether a process group was joined, its backend, and whether the
   model holds SyncBatchNorm layers.
4. `camvid`: a short full-resolution CamVid training
   (recipes/unet_resnet10t_camvid_fullres.yaml, from scratch) and its val
   mIoU; the dry run trains the same recipe on tiny synthetic frames.

Writes <out>/gpu_proof.json (every figure, the machine, each part's status,
reason and seconds) and <out>/gpu_proof.md (a short summary: the section of
BENCHMARKS.md it fills). A part that fails or runs out of its time is recorded
as such and the next one runs; the exit status is 1 if any part failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a checkout runs without installing

BUDGET_S = 600
MODES = {  # name -> BenchSpec settings
    "fp32 eager": {"amp": "off", "channels_last": False, "compile": False},
    "bf16": {"amp": "bf16", "channels_last": False, "compile": False},
    "bf16 + channels_last": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16 + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}
FULL = {"encoder": "resnet50", "size": (512, 512), "batch": 8, "iters": 10, "warmup": 3,
        "train_iters": 300, "timeouts": {"cuda_tests": 120, "ddp": 90, "camvid": 180}}
DRY = {"encoder": "test_resnet", "size": (64, 64), "batch": 2, "iters": 1, "warmup": 1,
       "train_iters": 2, "timeouts": {"cuda_tests": 60, "ddp": 60, "camvid": 60}}


def part(fn, *args, **kwargs) -> dict:
    """Run one part: its figures, plus status (ok / failed / skipped), reason and seconds."""
    t0 = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except subprocess.TimeoutExpired as e:
        result = {"status": "failed", "reason": f"over its {e.timeout:.0f} s"}
    except Exception as e:  # a part that fails is a finding; the next part still runs
        result = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    result.setdefault("status", "ok")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def _python(args, timeout, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


# ----------------------------------------------------------------------------- parts

def cuda_tests(cuda: bool, timeout: float) -> dict:
    command = ["-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs", "tests"]
    if not cuda:  # collecting the whole suite alone takes most of a dry run's minute
        return skipped("needs CUDA: `pytest -m cuda` selects tests that run on a GPU only")
    proc = _python(command, timeout)
    tail = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1:] or [proc.stderr.strip()[-200:]]
    out = {"command": "pytest -m cuda tests", "summary": tail[0], "returncode": proc.returncode}
    if proc.returncode != 0:
        out.update(status="failed", reason=tail[0])
    return out


def throughput(cuda: bool, cfg: dict, deadline: float, log) -> dict:
    from zoo.lab.bench import BenchSpec, benchmark
    device = "cuda" if cuda else "cpu"
    rows, skipped_modes = [], {}
    for arch in ("unet", "pspnet"):
        for mode, settings in MODES.items():
            if settings["compile"] and not cuda:
                skipped_modes[mode] = "needs CUDA: torch.compile is timed on the GPU only"
                continue
            if time.monotonic() > deadline:
                skipped_modes[f"{arch} {mode}"] = "over the part's share of the ten minutes"
                continue
            spec = BenchSpec(arch, cfg["encoder"], "bilinear", size=cfg["size"], batch=cfg["batch"],
                             device=device, num_classes=19, model_args={"encoder_weights": None},
                             **settings)
            for row in benchmark(spec, against="smp", iters=cfg["iters"], warmup=cfg["warmup"],
                                 log=log):
                rows.append({"mode": mode, **{k: row.get(k) for k in (
                    "impl", "arch", "encoder", "size", "batch", "train_img_s", "infer_img_s",
                    "mfu_train", "mfu_infer", "train_ms", "infer_ms", "peak_mem_mb", "gflops",
                    "comparable")}})
                log(f"throughput {arch} {mode} {row['impl']}: train {row['train_img_s']:.1f} img/s, "
                    f"infer {row['infer_img_s']:.1f} img/s")
    return {"rows": rows, "skipped_modes": skipped_modes}


def ddp(cuda: bool, out: Path, dry_run: bool, timeout: float) -> dict:
    """One torchrun process through the trainer with SyncBN; the child reports what it saw."""
    facts = out / "ddp_facts.json"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(Path(__file__)),
            "--ddp-child", "--out", str(out)] + (["--dry-run"] if dry_run else [])
    proc = _python(args, timeout)
    if proc.returncode != 0 or not facts.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return {"status": "failed", "reason": lines[-1][:300] if lines else f"exit {proc.returncode}"}
    result = json.loads(facts.read_text())
    result["command"] = "torchrun --standalone --nproc_per_node=1 scripts/gpu_proof.py --ddp-child"
    if not cuda:
        result.update(status="skipped", reason="needs CUDA for nccl and SyncBatchNorm: ran on gloo")
    elif not (result["process_group"] and result["sync_bn_layers"]):
        result.update(status="failed", reason="the trainer joined no nccl group or kept plain BatchNorm "
                                              "(zoo/engine/distributed.setup treats WORLD_SIZE=1 as one process)")
    return result


def ddp_child(out: Path, dry_run: bool) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import Trainer
    cuda = torch.cuda.is_available()
    recipe = recipe_from_dict({
        "model": {"name": "unet", "encoder": "test_resnet" if dry_run else "resnet18",
                  "encoder_weights": None},
        "data": {"dataset": "synthetic", "batch_size": 2 if dry_run else 8, "num_workers": 0,
                 "options": {"num_images": 8, "size": [64, 64] if dry_run else [256, 256]}},
        "train": {"iters": 2 if dry_run else 20, "sync_bn": True, "device": "cuda" if cuda else "cpu",
                  "checkpoint_interval": 1000},
        "eval": {"interval": 1000, "max_images": 2}, "log": {"num_images": 0}})
    trainer = Trainer(recipe, out / "ddp_run", resume=False)
    layers = sum(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.modules())
    facts = {"world_size": int(os.environ.get("WORLD_SIZE", "1")), "process_group": dist.is_initialized(),
             "backend": dist.get_backend() if dist.is_initialized() else None, "sync_bn_layers": layers,
             "device": str(trainer.device)}
    result = trainer.fit()  # the final evaluation; the training loss is in metrics.jsonl
    rows = [json.loads(line) for line in (out / "ddp_run" / "metrics.jsonl").read_text().splitlines()]
    facts["final_loss"] = next((r["loss"] for r in reversed(rows) if "loss" in r), None)
    facts["val_mIoU"] = result.get("mIoU") if isinstance(result, dict) else None
    (out / "ddp_facts.json").write_text(json.dumps(facts, indent=1, default=str))


def camvid(cuda: bool, out: Path, data_root: str | None, cfg: dict, dry_run: bool, timeout: float) -> dict:
    run_dir = out / "camvid_run"
    overrides = ["model.pretrained=null", f"train.iters={cfg['train_iters']}",
                 f"eval.interval={cfg['train_iters']}", "log.num_images=0",
                 f"train.warmup_iters={cfg['train_iters'] // 10}",
                 f"train.device={'cuda' if cuda else 'cpu'}", "train.checkpoint_interval=100000"]
    if dry_run:  # the recipe's steps on tiny synthetic frames
        overrides += ["data.dataset=synthetic", "data.root=null", "data.train_transforms=[]",
                      "data.options={num_images: 4, size: [64, 96]}", "data.batch_size=2",
                      "data.num_workers=0", "train.class_weights=null", "eval.max_images=2"]
    elif data_root:
        overrides += [f"data.root={data_root}", f"data.num_workers={min(8, os.cpu_count() or 1)}"]
    else:
        return skipped("no --data-root: CamVid is not on this machine")
    proc = _python(["-m", "zoo", "train", "unet_resnet10t_camvid_fullres", *overrides,
                    "--run-dir", str(run_dir), "--fresh"], timeout)
    result = {"command": "segzoo train unet_resnet10t_camvid_fullres " + " ".join(overrides),
              "iters": cfg["train_iters"]}
    evaluation = run_dir / "eval.json"
    if proc.returncode != 0 or not evaluation.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return {**result, "status": "failed", "reason": lines[-1][:300] if lines else "no eval.json"}
    metrics = json.loads(evaluation.read_text())
    return {**result, "val_mIoU": metrics.get("mIoU"), "pixel_acc": metrics.get("pixel_acc"),
            **({"status": "skipped", "reason": "needs CUDA for the real run: trained on synthetic frames"}
               if dry_run else {})}


# ----------------------------------------------------------------------------- report

def summary(report: dict) -> str:
    m = report["machine"]
    lines = [f"# GPU proof ({'dry run' if report['dry_run'] else 'full'})", "",
             f"{m.get('gpu', 'no GPU')}, torch {m['torch']}, {m['date']}; "
             f"{report['seconds']:.0f} s in all. Command: `{report['command']}`", "",
             "| part | status | seconds | result |", "|---|---|---|---|"]
    for name, r in report["parts"].items():
        text = r.get("reason", "")
        if name == "cuda_tests":
            text = f"{r.get('summary', '')} {text}".strip()
        elif name == "camvid" and r.get("val_mIoU") is not None:
            text = f"val mIoU {r['val_mIoU']:.4f} after {r['iters']} iters. {text}".strip()
        elif name == "ddp" and "backend" in r:
            text = (f"group {r['backend'] or 'none'}, {r['sync_bn_layers']} SyncBatchNorm layers. "
                    f"{text}").strip()
        lines.append(f"| {name} | {r['status']} | {r['seconds']} | {text} |")
    rows = report["parts"].get("throughput", {}).get("rows", [])
    if rows:
        lines += ["", "| arch | mode | impl | train img/s | infer img/s | MFU train | MFU infer | peak MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mfu = [f"{v:.1%}" if v is not None else "-" for v in (r["mfu_train"], r["mfu_infer"])]
            mem = f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-"
            lines.append(f"| {r['arch']} | {r['mode']} | {r['impl']} | {r['train_img_s']:.1f} | "
                         f"{r['infer_img_s']:.1f} | {mfu[0]} | {mfu[1]} | {mem} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_proof.json and gpu_proof.md")
    p.add_argument("--data-root", default=None, help="CamVid (SegNet layout) for the training part")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes and a few steps (runs on a CPU)")
    p.add_argument("--skip", nargs="+", default=[], choices=["cuda_tests", "throughput", "ddp", "camvid"])
    p.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.ddp_child:
        ddp_child(out, args.dry_run)
        return 0

    import torch

    from zoo.common.machine import machine_info
    start, cuda = time.monotonic(), torch.cuda.is_available()
    cfg = DRY if args.dry_run else FULL
    log = lambda line: print(line, flush=True)  # noqa: E731
    if not cuda and not args.dry_run:
        log("note: no CUDA on this machine; every part that needs it is skipped (--dry-run sizes them for a CPU)")
    parts = {}
    plan = {
        "cuda_tests": lambda: cuda_tests(cuda, cfg["timeouts"]["cuda_tests"]),
        "throughput": lambda: throughput(cuda, cfg, start + 0.55 * BUDGET_S, log),
        "ddp": lambda: ddp(cuda, out, args.dry_run, cfg["timeouts"]["ddp"]),
        "camvid": lambda: camvid(cuda, out, args.data_root, cfg, args.dry_run,
                                 min(cfg["timeouts"]["camvid"], max(10, start + BUDGET_S - time.monotonic()))),
    }
    for name, run in plan.items():
        if name in args.skip:
            parts[name] = {**skipped("--skip"), "seconds": 0.0}
            continue
        log(f"== {name}")
        parts[name] = part(run)
        log(f"   {parts[name]['status']} in {parts[name]['seconds']} s {parts[name].get('reason', '')}")
    report = {"dry_run": args.dry_run, "cuda": cuda, "machine": machine_info(),
              "command": " ".join(["python scripts/gpu_proof.py", *(argv if argv is not None else sys.argv[1:])]),
              "seconds": round(time.monotonic() - start, 1), "budget_s": BUDGET_S, "parts": parts}
    (out / "gpu_proof.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_proof.md").write_text(summary(report))
    log(summary(report))
    return 1 if any(r["status"] == "failed" for r in parts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
