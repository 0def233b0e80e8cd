"""The report's verdicts: "Which upsampler should I use" (the table the report
opens with), per-class differences, "Against the literature", and
`summary.json`, all from the paired comparisons of `paired.py`.

An upsampler is *better* than the reference when the 95% interval of its
per-seed difference lies above 0 for mIoU or Boundary IoU and below 0 for
neither; *worse* the other way round; *mixed* when it is better on one and
worse on the other; otherwise *no difference detected*.
"""
from __future__ import annotations

import math
from pathlib import Path

from zoo.common.fileio import atomic_write_json
from zoo.lab.ablate.measure import added_measurements
from zoo.lab.ablate.paired import BETTER, NO_DIFFERENCE, TOO_FEW, WORSE, Comparison, compare, describe, signed

SUMMARY = "summary.json"
MIXED = "mixed"

# The literature's deltas over bilinear upsampling, in points (mIoU x 100).
LITERATURE = (
    {"source": "FADE paper (Lu et al., \"FADE: Fusing the Assets of Decoder and Encoder for Task-Agnostic "
               "Upsampling\", ECCV 2022), semantic segmentation table",
     "setting": "ADE20K (150 classes, 20k training images), SegFormer-B1 (ImageNet-pretrained MiT-B1), "
                "SegFormer's schedule; bilinear 41.68 mIoU / 27.80 boundary IoU",
     "upsampler": "carafe", "miou": 42.82 - 41.68, "boundary_iou": 29.84 - 27.80},
    {"source": "FADE paper (as above)", "setting": "as above", "upsampler": "fade",
     "miou": 44.41 - 41.68, "boundary_iou": 32.65 - 27.80},
    {"source": "SAPA (Lu et al., \"SAPA: Similarity-Aware Point Affiliation for Feature Upsampling\", "
               "NeurIPS 2022)",
     "setting": "ADE20K, the segmentation models it reports (ImageNet-pretrained); the range over them",
     "upsampler": "sapa", "miou": (1.5, 2.7), "boundary_iou": None},
    {"source": "FreqFusion (Chen et al., \"Frequency-aware Feature Fusion for Dense Image Prediction\", "
               "IEEE TPAMI 2024)",
     "setting": "ADE20K, SegNeXt-T (ImageNet-pretrained)", "upsampler": "freqfusion", "miou": 2.4,
     "boundary_iou": None},
)


def _by(comparisons: list[Comparison], metric: str) -> dict:
    return {(c.arch, c.encoder, c.upsampler): c for c in comparisons if c.metric == metric}


def category(miou: Comparison, boundary: Comparison | None) -> str:
    verdicts = {miou.stats.verdict, boundary.stats.verdict if boundary else None}
    if BETTER in verdicts:
        return MIXED if WORSE in verdicts else BETTER
    return WORSE if WORSE in verdicts else miou.stats.verdict


def _family_label(arch: str, encoder: str, several: bool) -> str:
    return f"{arch}/{encoder}" if several else arch


def _costs(group) -> list[str]:
    def num(v, fmt):
        return "n/a" if v is None else fmt.format(v)
    return [f"{group.params / 1e6:.2f}", f"{group.gflops:.2f}", num(group.latency_ms, "{:.1f}"),
            num(group.img_s, "{:.1f}"), *(num(group.added(n), m.fmt) for n, m in added_measurements())]


def decision_blocks(comparisons: list[Comparison], groups, reference: str, target: float) -> list[tuple]:
    """The section "Which upsampler should I use": one table of the upsamplers
    better than the reference (with the reference's row for the costs), then the
    others, compactly."""
    blocks: list[tuple] = [("h2", "Which upsampler should I use")]
    miou, boundary = _by(comparisons, "miou"), _by(comparisons, "boundary_iou")
    if not miou:
        return blocks + [("p", f"No comparison: no architecture has a finished run with the reference "
                               f"upsampler `{reference}` (set `report.reference` to one in the grid).")]
    if all(c.stats.n < 2 for c in miou.values()):
        return blocks + [("p", f"Fewer than two seeds are finished for every upsampler and the reference "
                               f"`{reference}` alike: a difference has no interval yet, so nothing is "
                               "decided. Add seeds to the grid (paired by seed).")]
    by_config = {(g.runs[0].cell.arch, g.runs[0].cell.encoder, g.upsample): g for g in groups}
    several = len({k[1] for k in by_config}) > 1
    header = ["architecture", "upsampler", "Δ mIoU [95% CI]", "Δ boundary IoU [95% CI]", "seeds",
              "params (M)", "GFLOPs", "latency (ms)", "train img/s", *(m.label for _, m in added_measurements())]
    rows, rest = [], []
    families = list(dict.fromkeys((k[0], k[1]) for k in miou))
    for arch, encoder in families:
        family = _family_label(arch, encoder, several)
        mine = [c for k, c in miou.items() if k[:2] == (arch, encoder)]
        ref = by_config.get((arch, encoder, reference))
        if ref is not None:
            rows.append([family, f"{reference} (reference)", f"mIoU {ref.miou:.3f}",
                         "n/a" if ref.boundary_iou is None else f"{ref.boundary_iou:.3f}",
                         str(len(ref.runs)), *_costs(ref)])
        kinds: dict[str, list[Comparison]] = {}
        for c in sorted(mine, key=lambda c: -(c.stats.mean or 0.0)):
            b = boundary.get((arch, encoder, c.upsampler))
            kinds.setdefault(category(c, b), []).append(c)
        for c in kinds.get(BETTER, []) + kinds.get(MIXED, []):
            b = boundary.get((arch, encoder, c.upsampler))
            g = by_config[(arch, encoder, c.upsampler)]
            rows.append([family, c.upsampler + (" (mixed)" if c in kinds.get(MIXED, []) else ""),
                         describe(c.stats), describe(b.stats) if b else "n/a", str(c.stats.n), *_costs(g)])
        if not kinds.get(BETTER) and not kinds.get(MIXED):
            rows.append([family, f"none better than {reference}", "", "", "", *[""] * (len(header) - 5)])
        rest.append(_compact(family, kinds, boundary, reference, target))
    return blocks + [
        ("p", f"Each upsampler against `{reference}` on the same architecture, seed by seed: for a seed, both "
              "trained on the same batches, crops, flips and colour jitter from the same encoder "
              "initialisation, so Δ is the mean of the per-seed differences and its 95% interval is "
              "Student's t over seeds (`zoo/lab/ablate/paired.py`). Listed: the upsamplers whose interval "
              "lies above 0 for mIoU or boundary IoU (and below 0 for neither; (mixed): above for one, "
              "below for the other), with their cost; the reference's row gives its absolute numbers and cost."),
        ("table", header, rows), ("ul", rest)]


def _compact(family, kinds, boundary, reference, target) -> str:
    parts = []
    for kind, label in ((NO_DIFFERENCE, "no difference detected (± the smallest difference the grid could "
                                        "detect)"), (WORSE, "worse"), (TOO_FEW, "too few seeds")):
        items = []
        for c in kinds.get(kind, []):
            b = boundary.get((c.arch, c.encoder, c.upsampler))
            text = f"`{c.upsampler}` {describe(c.stats)}"
            if kind == NO_DIFFERENCE:
                text += f" (±{c.stats.half_width:.3f}; {c.stats.seeds_for(target)} seeds for ±{target:g})"
            if b is not None and b.stats.n > 1:
                text += f", boundary {describe(b.stats)}"
            items.append(text)
        if items:
            parts.append(f"{label}: " + "; ".join(items))
    return f"{family} vs `{reference}`: " + (". ".join(parts) if parts else "nothing else") + "."


def per_class_blocks(comparisons: list[Comparison], classes) -> list[tuple]:
    """Per-class IoU differences against the reference (mean over paired seeds;
    ↑ / ↓ where the 95% interval lies above / below 0)."""
    per = {(c.arch, c.encoder, c.upsampler, c.metric): c for c in comparisons if c.metric.startswith("iou/")}
    keys = list(dict.fromkeys(k[:3] for k in per))
    if not keys or all(c.stats.n < 2 for c in per.values()):
        return []
    several = len({k[1] for k in keys}) > 1
    mark = {BETTER: "↑", WORSE: "↓"}
    rows = []
    for arch, encoder, up in keys:
        row = [_family_label(arch, encoder, several), up]
        for name in classes:
            c = per.get((arch, encoder, up, f"iou/{name}"))
            row.append("n/a" if c is None or c.stats.mean is None else
                       signed(c.stats.mean) + mark.get(c.stats.verdict, ""))
        rows.append(row)
    reference = next(iter(per.values())).reference
    return [("h2", f"Per-class IoU differences against {reference}"),
            ("p", f"Mean over paired seeds of IoU(upsampler) − IoU({reference}) per class; ↑ / ↓: the 95% "
                  "interval lies above / below 0."),
            ("table", ["architecture", "upsampler", *classes], rows)]


def _points(stats) -> str:
    return describe(type(stats)(stats.seeds, tuple(100 * d for d in stats.diffs)), "{:+.2f}")


def _their(value) -> str:
    if value is None:
        return "not reported"
    if isinstance(value, tuple):
        return f"{value[0]:+.1f} to {value[1]:+.1f}"
    return f"{value:+.2f}"


def our_setting(ablation, results) -> str:
    """Our side of the literature comparison, read from the ablation and the runs."""
    r = ablation.cells[0].recipe
    crops = [t.get("params") or {} for t in r.data.train_transforms or [] if t.get("name") == "RandomCrop"]
    crop = f", {crops[-1].get('height')}x{crops[-1].get('width')} training crops" if crops else ""
    size = results[0].m.get("input_size") if results else None
    val = f", scored at {size[0]}x{size[1]}" if size else ""
    scales = list(r.eval.scales)
    weights = r.model.get("encoder_weights") or "none: from scratch"
    g = ablation.grid
    return (f"{r.data.dataset} ({len(results[0].m['classes']) if results else '?'} classes), "
            f"{', '.join(g['architectures'])} on {', '.join(g['encoders'])} (encoder weights: {weights}), "
            f"{r.train.iters} iterations of batch {r.data.batch_size}{crop}{val} (eval scales {scales}), "
            f"{len(g['seeds'])} seed(s)")


def literature_blocks(results, ablation) -> list[tuple]:
    """"Against the literature": their deltas over bilinear beside ours (points, mIoU x 100)."""
    ours = compare(results, "bilinear", metrics=["miou", "boundary_iou"])
    several = len({c.encoder for c in ours}) > 1
    header = ["source", "their setting", "upsampler", "their Δ mIoU (pt)", "their Δ boundary IoU (pt)",
              "our Δ mIoU (pt) [95% CI]", "our Δ boundary IoU (pt) [95% CI]"]
    rows = []
    for lit in LITERATURE:
        mine = [c for c in ours if c.upsampler == lit["upsampler"]]

        def cell(metric):
            found = [f"{_family_label(c.arch, c.encoder, several)}: {_points(c.stats)} (n={c.stats.n})"
                     for c in mine if c.metric == metric and c.stats.n]
            return "; ".join(found) if found else "not in this grid"
        rows.append([lit["source"], lit["setting"], lit["upsampler"], _their(lit["miou"]),
                     _their(lit["boundary_iou"]), cell("miou"), cell("boundary_iou")])
    if not any(c.stats.n > 1 for c in ours):  # nothing of ours to set beside them yet: listed, not tabled
        return [("h2", "Against the literature"),
                ("p", "Published gains over bilinear upsampling (points: IoU x 100); ours need two seeds "
                      f"of `bilinear` and the upsampler. Ours: {our_setting(ablation, results)}."),
                ("ul", [f"`{r[2]}`: {r[3]} mIoU, {r[4]} boundary IoU; {r[1]}. {r[0]}" for r in rows])]
    return [("h2", "Against the literature"),
            ("p", "Published gains over bilinear upsampling beside ours (differences in points: IoU x 100). "
                  f"Ours: {our_setting(ablation, results)}. The settings differ in dataset (ADE20K's 150 "
                  "classes and 20k images against this one), architecture (SegFormer / SegNeXt heads "
                  "against these decoders), encoder and its pre-training, schedule and resolution, so a "
                  "published gain is a hypothesis to test here, not a number to expect."),
            ("table", header, rows)]


def summary(ablation, results, comparisons: list[Comparison], reference: str, target: float) -> dict:
    """What `summary.json` holds: the comparisons and every finished cell's numbers."""
    cells = [{"architecture": r.cell.arch, "encoder": r.cell.encoder, "upsampler": r.cell.upsample,
              "seed": r.cell.seed, "miou": r.m.get("mIoU"), "boundary_iou": r.m.get("boundary_iou"),
              "per_class_iou": r.m.get("per_class_iou"),
              **{k: r.m.get(k) for k in ("params", "gflops", "latency_ms", "train_img_s")}}
             for r in results]
    return {"ablation": ablation.name, "source": str(ablation.source), "reference": reference,
            "target_half_width": target, "units": "fractions (mIoU 0.317, not 31.7)",
            "comparisons": [c.to_json() for c in comparisons], "cells": cells}


def _finite(obj):
    """NaN (a class absent from the split) as null: strict JSON readers refuse NaN."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_summary(out: Path, data: dict) -> Path:
    path = Path(out) / SUMMARY
    atomic_write_json(path, _finite(data))
    return path
