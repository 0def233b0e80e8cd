"""Learning parity with segmentation_models_pytorch: one sample stream, two models.

`run_parity(...)` trains a zoo model and its smp counterpart side by side
from scratch, step for step on the same batches (the same images, crops,
flips, in the same order), with the same optimiser (AdamW, poly decay),
loss (cross-entropy, void ignored) and number of iterations, for several
seeds, and reports each one's training-loss curve, val mIoU at the end,
parameters and step time, as JSON and a plot. It answers "does this model
learn as fast as the best peer's", which matching parameter counts and
throughput do not.

Pairs: `unet` against `smp.Unet` (same encoder depth and decoder widths,
smp's default nearest interpolation), `pspnet` against `smp.PSPNet`. smp's
PSPNet is not dilated: it cuts the encoder after its third stage (stride
8) and upsamples x8 at the end, where the zoo's PSPNet dilates the whole
encoder to output stride 8 (as the paper); the report says so.

After a change to the zoo, `peer=` (a stored report of the same benchmark)
re-trains only the zoo side: the peer's curve and val mIoU are taken from
that report for each seed, since its run is a pure function of the seed
and the settings, which must match. Each reused side names its source.

Data: CamVid (`root`, SegNet layout) with frames resized to `frame` and
random `crop`s plus horizontal flips for training, val frames resized to
`frame` (labels nearest); or the embedded synthetic scenes (`root=None`).
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo import factory
from zoo.common.fileio import atomic_write_json
from zoo.data import build_dataset, build_transform
from zoo.engine.data import SeededSamples, StreamSampler
from zoo.engine.metrics import ConfusionMatrix
from zoo.lab.counterparts import smp_encoder_name, smp_unet, unet_widths

PAIRS = ("unet", "pspnet")


def build_pair(arch: str, encoder: str, num_classes: int, zoo_args: dict | None = None):
    """(zoo model, smp model, note on how they differ)."""
    import segmentation_models_pytorch as smp

    if arch not in PAIRS:
        raise ValueError(f"learning parity compares {', '.join(PAIRS)}, not {arch!r}")
    ours = factory.create(arch, encoder=encoder, num_classes=num_classes, **(zoo_args or {}))
    enc = smp_encoder_name(encoder)
    if arch == "unet":
        theirs = smp_unet(ours, encoder, num_classes)
        note = f"smp.Unet({enc}, decoder_channels={tuple(unet_widths(ours))}), nearest interpolation"
    else:
        theirs = smp.PSPNet(enc, encoder_weights=None, classes=num_classes)
        note = (f"smp.PSPNet({enc}): encoder cut after stage 3 (stride 8, not dilated), x8 "
                "bilinear at the end; the zoo's PSPNet dilates the full encoder to stride 8")
    return ours, theirs, note


def sample_stream(root, frame, crop, batch: int, seed: int, train: bool = True):
    """The dataset and an endless iterator of batches, a pure function of `seed`."""
    from torch.utils.data import DataLoader

    if root is None:
        family, entries = "synthetic", [{"name": "HorizontalFlip", "params": {"p": 0.5}}]
        val_entries = []
    else:
        family = "camvid"
        resize = {"name": "Resize", "params": {"height": frame[0], "width": frame[1]}}
        entries = [resize, {"name": "RandomCrop", "params": {"height": crop[0], "width": crop[1]}},
                   {"name": "HorizontalFlip", "params": {"p": 0.5}}]
        val_entries = [resize]
    split = "train" if train else "val"
    transform = build_transform(entries if train else val_entries, train=train, family=family,
                                crop_size=None)
    data = build_dataset(family, root, split, transform=transform)
    if not train:
        return data, None
    sampler = StreamSampler(len(data), batch, seed)
    loader = DataLoader(SeededSamples(data), batch_sampler=sampler, num_workers=0)
    return data, iter(loader)


def poly(optimizer, iters: int, power: float = 0.9):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 - min(t, iters) / iters) ** power)


def input_multiple(*models: nn.Module) -> int:
    """The size every side of an input must be a multiple of for all `models`: smp's
    PSPNet refuses a 180x240 frame (not a multiple of its stride, 8), the zoo's
    models and smp's U-Net take any size."""
    multiple = 1
    for m in models:
        if getattr(m, "requires_divisible_input_shape", False):
            stride = int(getattr(getattr(m, "encoder", None), "output_stride", 32))
            multiple = multiple * stride // math.gcd(multiple, stride)
    return multiple


@torch.no_grad()
def val_miou(model: nn.Module, data, num_classes: int, device, multiple: int = 1) -> float:
    """mIoU over `data`'s frames at their own size; with `multiple` > 1 each frame is
    zero-padded at the bottom and right to a multiple of it and the logits cropped
    back (give both models of a pair the same `multiple`, so they see the same input)."""
    model.eval()
    cm = ConfusionMatrix(num_classes, data.ignore_index, device=device)
    for i in range(len(data)):
        sample = data[i]
        x = sample["image"][None].to(device)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
        logits = model(x)[..., :h, :w]
        cm.update(logits.argmax(1), sample["mask"][None].to(device))
    model.train()
    return cm.compute()["mIoU"]


SETTINGS = ("arch", "encoder", "iters", "batch", "lr", "weight_decay", "frame", "crop", "data")


def peer_runs(peer: dict, settings: dict, seeds, source: str = "peer report") -> dict[int, dict]:
    """The smp side of `peer` per seed, checked to come from the same benchmark."""
    differ = [f"{k} ({peer.get(k)!r} there, {settings[k]!r} here)" for k in SETTINGS
              if peer.get(k) != settings[k]]
    if differ:
        raise ValueError(f"{source}: its smp runs were trained with other settings: {', '.join(differ)}")
    have = {run["seed"]: run["smp"] for run in peer["runs"]}
    missing = [s for s in seeds if s not in have]
    if missing:
        raise ValueError(f"{source}: no smp run for seed(s) {missing}; it has {sorted(have)}")
    return {s: {**have[s], "reused_from": have[s].get("reused_from", source)} for s in seeds}


def run_parity(arch: str = "unet", *, encoder: str = "resnet18", root=None, seeds=(0, 1),
               iters: int = 500, batch: int = 8, lr: float = 1e-3, weight_decay: float = 1e-2,
               frame=(180, 240), crop=(176, 224), device: str = "cpu", zoo_args: dict | None = None,
               peer: dict | None = None, peer_source: str = "peer report", log=print) -> dict:
    """Train both models of `arch` on one sample stream per seed (only the zoo's
    where `peer` gives the smp side); returns the JSON report."""
    settings = {"arch": arch, "encoder": encoder, "iters": iters, "batch": batch, "lr": lr,
                "weight_decay": weight_decay, "frame": list(frame), "crop": list(crop),
                "data": "camvid" if root is not None else "synthetic"}
    reused = peer_runs(peer, settings, seeds, peer_source) if peer is not None else {}
    device = torch.device(device)
    val, _ = sample_stream(root, frame, crop, batch, 0, train=False)
    k = len(val.classes)
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        ours, theirs, note = build_pair(arch, encoder, k, zoo_args)
        models = {"zoo": ours.to(device).train()}
        if seed not in reused:
            models["smp"] = theirs.to(device).train()
        opts = {n: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=weight_decay) for n, m in models.items()}
        scheds = {n: poly(o, iters) for n, o in opts.items()}
        losses = {n: [] for n in models}
        seconds = {n: 0.0 for n in models}
        _, stream = sample_stream(root, frame, crop, batch, seed)
        for it in range(iters):
            b = next(stream)
            x, y = b["image"].to(device), b["mask"].to(device)
            for name, model in models.items():
                t0 = time.perf_counter()
                opts[name].zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y, ignore_index=val.ignore_index)
                loss.backward()
                opts[name].step()
                scheds[name].step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name] += time.perf_counter() - t0
                losses[name].append(loss.item())
            if (it + 1) % max(1, iters // 10) == 0:
                log(f"[{arch} seed {seed}] {it + 1}/{iters}  " +
                    "  ".join(f"{n} {statistics.mean(v[-(iters // 10):]):.3f}" for n, v in losses.items()))
        run = {"seed": seed, "note": note}
        multiple = input_multiple(ours, theirs)  # the same val input for both, smp's side reused or not
        if multiple > 1:
            run["val_padding"] = f"frames zero-padded at the bottom and right to a multiple of {multiple}"
        for name, model in models.items():
            run[name] = {"loss": losses[name], "val_mIoU": val_miou(model, val, k, device, multiple),
                         "params": sum(p.numel() for p in model.parameters()),
                         "step_s": seconds[name] / iters}
        if seed in reused:
            run["smp"] = reused[seed]
        log(f"[{arch} seed {seed}] val mIoU zoo {run['zoo']['val_mIoU']:.4f}  smp {run['smp']['val_mIoU']:.4f}")
        runs.append(run)
    return {**settings, "device": str(device), "zoo_args": zoo_args or {}, "runs": runs,
            "summary": summarize(runs, iters)}


def combine(reports: list[dict]) -> dict:
    """One report from runs of the same benchmark with different seeds (for example
    one process per seed), summarised again; settings that differ are refused."""
    first = reports[0]
    for r in reports[1:]:
        differ = [k for k in SETTINGS + ("zoo_args", "device") if r.get(k) != first.get(k)]  # step times too
        if differ:
            raise ValueError(f"cannot combine parity reports that differ in {', '.join(differ)}")
    runs = sorted((run for r in reports for run in r["runs"]), key=lambda run: run["seed"])
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"cannot combine parity reports with a seed twice: {seeds}")
    return {**first, "runs": runs, "summary": summarize(runs, first["iters"])}


def _mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict], iters: int) -> dict:
    """Per model: val mIoU and the mean training loss over the last 40% of
    iterations (300-500 of 500), mean and std over seeds; params; step time.
    `paired`: zoo minus smp seed by seed (both sides of a seed saw the same
    batches, so the per-seed difference removes the stream's own luck), its
    mean and std, and on how many seeds the zoo is ahead (higher mIoU, lower loss)."""
    lo = int(iters * 0.6)
    out = {}
    per_seed = {}
    for name in ("zoo", "smp"):
        per_seed[name] = {"val_mIoU": [r[name]["val_mIoU"] for r in runs],
                          "late_loss": [statistics.mean(r[name]["loss"][lo:]) for r in runs]}
        out[name] = {
            "val_mIoU": _mean_std(per_seed[name]["val_mIoU"]),
            "late_loss": _mean_std(per_seed[name]["late_loss"]),
            "params_m": runs[0][name]["params"] / 1e6,
            "step_s": statistics.mean(r[name]["step_s"] for r in runs),
        }
    out["paired"] = {}
    for metric, better in (("val_mIoU", 1), ("late_loss", -1)):
        diffs = [z - s for z, s in zip(per_seed["zoo"][metric], per_seed["smp"][metric])]
        out["paired"][metric] = {"diff": _mean_std(diffs),
                                 "zoo_ahead": sum(better * d > 0 for d in diffs), "seeds": len(diffs)}
    return out


def format_summary(report: dict) -> str:
    s, lo = report["summary"], int(report["iters"] * 0.6)
    lines = [f"{report['arch']} / {report['encoder']}: {len(report['runs'])} seed(s), {report['iters']} "
             f"iterations, batch {report['batch']} of {report['crop']} crops ({report['data']}), "
             f"{report['device']}; {report['runs'][0]['note']}",
             f"| model | val mIoU | train loss, iterations {lo}-{report['iters']} | params (M) | s / step |",
             "|---|---|---|---|---|"]
    for name in ("zoo", "smp"):
        m = s[name]
        lines.append(f"| {name} | {m['val_mIoU'][0]:.4f} ± {m['val_mIoU'][1]:.4f} | "
                     f"{m['late_loss'][0]:.4f} ± {m['late_loss'][1]:.4f} | {m['params_m']:.2f} | "
                     f"{m['step_s']:.2f} |")
    for metric, label in (("val_mIoU", "val mIoU"), ("late_loss", f"loss {lo}-{report['iters']}")):
        p = s["paired"][metric]
        lines.append(f"zoo - smp, paired by seed, {label}: {p['diff'][0]:+.4f} ± {p['diff'][1]:.4f} "
                     f"(zoo ahead on {p['zoo_ahead']} of {p['seeds']} seeds)")
    sources = sorted({r["smp"]["reused_from"] for r in report["runs"] if "reused_from" in r["smp"]})
    if sources:
        lines.append(f"smp side reused from {', '.join(sources)} (same seeds and settings; not re-trained)")
    return "\n".join(lines)


def plot(report: dict, path: Path, window: int = 20, before: dict | None = None) -> Path:
    """Training-loss curves (running mean over `window` steps; band: min-max over
    seeds); `before`, an earlier report, adds its zoo curve dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    sides = [(report, "zoo", "zoo", "tab:blue", "-"), (report, "smp", "smp", "tab:orange", "-")]
    if before is not None:
        sides.append((before, "zoo", "zoo before", "tab:gray", "--"))
    for rep, name, label, colour, style in sides:
        curves = np.array([np.convolve(r[name]["loss"], np.ones(window) / window, mode="valid")
                           for r in rep["runs"]])
        steps = np.arange(curves.shape[1]) + window
        miou = rep["summary"][name]["val_mIoU"][0]
        ax.plot(steps, curves.mean(0), color=colour, linestyle=style, label=f"{label} (val mIoU {miou:.3f})")
        if style == "-":
            ax.fill_between(steps, curves.min(0), curves.max(0), color=colour, alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training loss (mean of {window})")
    ax.set_title(f"{report['arch']} / {report['encoder']}: zoo vs smp, one sample stream", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write(report: dict, out_dir, before: dict | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    stem = f"parity_{report['arch']}_{report['encoder']}"
    atomic_write_json(out_dir / f"{stem}.json", report)
    return [out_dir / f"{stem}.json", plot(report, out_dir / f"{stem}.png", before=before)]
