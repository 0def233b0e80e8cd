"""The ablation report: tables, plots, Markdown and a self-contained HTML page.

`write_report(ablation, out)` measures every finished cell under
`<out>/runs/` (`measure.py`, cached), averages the seeds of each
configuration (mean and sample std), and writes into `out`:

- `README.md`: "Which upsampler should I use" (paired comparisons against
  `report.reference`, `paired.py` / `decision.py`), protocol, the results
  table, per-class IoU and its differences, the literature, every run, plots;
- `summary.json`: the comparisons and every cell's numbers, for machines;
- `report.html`: the same, with inline CSS and the PNGs base64-embedded, so
  the one file opens offline;
- the PNGs (`plots.py`).

The document is built once as a list of blocks and rendered twice (`page.py`).
Measurements added with `measure.register_measurement` get a column in the
configuration and run tables.
"""
from __future__ import annotations

import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.common.machine import describe
from zoo.lab.ablate import decision, plots
from zoo.lab.ablate.grid import Ablation, Cell, is_finished, run_dir
from zoo.lab.ablate.measure import added_measurements, load_predictions, measure_run, measurement_lines
from zoo.lab.ablate.page import to_html, to_markdown
from zoo.lab.ablate.paired import compare
from zoo.lab.ablate.schema import upsampler_label

MARKDOWN, HTML = "README.md", "report.html"


@dataclass
class RunResult:
    cell: Cell
    path: Path
    m: dict

    @property
    def miou(self) -> float:
        return self.m["mIoU"]

    @property
    def checkerboard(self) -> float:
        return self.m["checkerboard"]


@dataclass
class Group:
    """The seeds of one configuration (architecture, encoder, upsampler)."""
    name: str
    family: str  # what the plots group by: the architecture (and encoder, when several)
    upsample: str
    runs: list[RunResult] = field(default_factory=list)

    def _mean(self, key):
        values = [r.m[key] for r in self.runs if r.m.get(key) is not None]
        return float(np.mean(values)) if values else None

    def added(self, name):
        """The mean over seeds of an added measurement (`measure.register_measurement`)."""
        values = [v for r in self.runs if (v := (r.m.get("extra") or {}).get(name)) is not None]
        return float(np.mean(values)) if values else None

    def _std(self, key):
        values = [r.m[key] for r in self.runs if r.m.get(key) is not None]
        return statistics.stdev(values) if len(values) > 1 else None

    miou = property(lambda self: self._mean("mIoU"))
    miou_std = property(lambda self: self._std("mIoU"))
    boundary_iou = property(lambda self: self._mean("boundary_iou"))
    boundary_iou_std = property(lambda self: self._std("boundary_iou"))
    trimap_miou = property(lambda self: self._mean("trimap_miou"))
    trimap_miou_std = property(lambda self: self._std("trimap_miou"))
    checkerboard = property(lambda self: self._mean("checkerboard"))
    checkerboard_std = property(lambda self: self._std("checkerboard"))
    latency_ms = property(lambda self: self._mean("latency_ms"))
    img_s = property(lambda self: self._mean("train_img_s"))
    params = property(lambda self: self.runs[0].m["params"])
    gflops = property(lambda self: self.runs[0].m["gflops"])

    @property
    def per_class(self) -> dict:
        out = {}
        for c in self.runs[0].m["per_class_iou"]:
            values = [r.m["per_class_iou"][c] for r in self.runs if r.m["per_class_iou"][c] is not None]
            out[c] = float(np.mean(values)) if values else None
        return out


def pareto_front(points) -> list[int]:
    """Indices of the (latency, mIoU) points no other point beats: none has
    lower-or-equal latency and higher-or-equal mIoU with one of them strictly
    better. Sorted by latency."""
    front = []
    for i, (lat, miou) in enumerate(points):
        dominated = any(l2 <= lat and m2 >= miou and (l2 < lat or m2 > miou)
                        for j, (l2, m2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def group_runs(results: list[RunResult]) -> list[Group]:
    several_encoders = len({r.cell.encoder for r in results}) > 1
    groups: dict[str, Group] = {}
    for r in results:
        family = f"{r.cell.arch}/{r.cell.encoder}" if several_encoders else r.cell.arch
        groups.setdefault(r.cell.config, Group(r.cell.config, family, r.cell.upsample)).runs.append(r)
    return list(groups.values())


# ----------------------------------------------------------------------------- formatting

def _pm(mean, std, fmt="{:.3f}") -> str:
    if mean is None:
        return "n/a"
    return f"{fmt.format(mean)} ± {fmt.format(std)}" if std is not None else fmt.format(mean)


def _num(value, fmt="{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def results_table(groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    header = ["architecture", "encoder", "upsampler", "seeds", "val mIoU", "boundary IoU",
              "trimap mIoU", "params (M)", "GFLOPs", "train img/s", "latency (ms)",
              "checkerboard (stride)", *(m.label for _, m in added_measurements())]
    rows = []
    for g in groups:
        r0 = g.runs[0]
        rows.append([r0.cell.arch, r0.cell.encoder, g.upsample, str(len(g.runs)),
                     _pm(g.miou, g.miou_std), _pm(g.boundary_iou, g.boundary_iou_std),
                     _pm(g.trimap_miou, g.trimap_miou_std), f"{g.params / 1e6:.2f}", f"{g.gflops:.2f}",
                     _num(g.img_s), _num(g.latency_ms),
                     f"{_pm(g.checkerboard, g.checkerboard_std, '{:.2g}')} (s={r0.m['checkerboard_stride']})",
                     *(_num(g.added(n), m.fmt) for n, m in added_measurements())])
    return header, rows


def pivot_table(groups: list[Group], value) -> tuple[list[str], list[list[str]]]:
    """Architectures (rows) x upsamplers (columns) of `value(group)`."""
    families = list(dict.fromkeys(g.family for g in groups))
    ups = list(dict.fromkeys(g.upsample for g in groups))
    cells = {(g.family, g.upsample): value(g) for g in groups}
    return (["architecture", *ups],
            [[f, *(cells.get((f, u), "") for u in ups)] for f in families])


def steps_table(groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for g in groups:
        steps = g.runs[0].m.get("upsampling") or []
        text = "; ".join(f"/{s['from']}→/{s['to']} {s['method']}" + (f" ({s['reads']})" if s["reads"] else "")
                         for s in steps)
        rows.append([g.name, text or "—"])
    return ["configuration", "upsampling steps"], rows


def per_class_table(groups: list[Group], classes) -> tuple[list[str], list[list[str]]]:
    header = ["configuration", *classes]
    rows = [[g.name, *(_num(g.per_class[c], "{:.3f}") for c in classes)] for g in groups]
    return header, rows


def runs_table(results: list[RunResult], out: Path) -> tuple[list[str], list[list[str]]]:
    header = ["cell", "val mIoU", "boundary IoU", "pixel acc", "train img/s", "latency (ms)",
              "checkerboard", *(m.label for _, m in added_measurements()), "run folder"]
    rows = [[r.cell.name, f"{r.miou:.4f}", _num(r.m.get("boundary_iou"), "{:.4f}"),
             _num(r.m.get("pixel_acc"), "{:.4f}"),
             _num(r.m["train_img_s"]), _num(r.m["latency_ms"]), f"{r.checkerboard:.3g}",
             *(_num((r.m.get("extra") or {}).get(n), m.fmt) for n, m in added_measurements()),
             str(r.path.relative_to(out)) if r.path.is_relative_to(out) else str(r.path)]
            for r in results]
    return header, rows


# ----------------------------------------------------------------------------- document

def _protocol(ablation: Ablation, results: list[RunResult]) -> list[str]:
    r = ablation.cells[0].recipe
    d, t, e = r.data, r.train, r.eval
    size = results[0].m["input_size"] if results else None
    g = ablation.grid
    options = ", ".join(f"{k}: {v}" for k, v in (d.options or {}).items())
    items = [
        f"base recipe `{ablation.base}`; data `{d.dataset}` (`{d.root}`"
        + (f", {options}" if options else "") + f"), trained on `{d.train_split}`, scored on "
        + (f"`{d.val_split}` as `holdout: {d.options['holdout']}` draws it (frames of other sequences)"
           if (d.options or {}).get("holdout") else f"`{d.val_split}`")
        + (f" at {size[0]}x{size[1]} (the val transform's size)" if size else ""),
        f"{t.iters} iterations of batch {d.batch_size}, {t.optimizer} lr {t.lr:g}, {t.schedule} "
        f"schedule, {t.warmup_iters} warm-up; encoder weights `{r.model.get('encoder_weights')}`; "
        f"evaluation `{e.mode}`, scales {list(e.scales)}, flip {e.flip}",
        f"grid: architectures {g['architectures']} x upsamplers "
        f"{[upsampler_label(u) for u in g['upsamplers']]} x encoders "
        f"{g['encoders']} x seeds {g['seeds']} = {len(ablation.cells)} cells, "
        f"{len(results)} finished",
    ]
    overrides = {}
    for cell in ablation.cells:
        overrides.setdefault(cell.arch, {k: v for k, v in cell.recipe.model.items()
                                         if k not in ("name", "encoder", "upsample", "encoder_weights")})
    items.append("model arguments per architecture: "
                 + "; ".join(f"{a}: {v or 'defaults'}" for a, v in overrides.items()))
    return items


def _not_finished(missing: list, total: int) -> str:
    """Cells left out, counted per architecture and upsampler: seventy names in a row are not read."""
    counts: dict[str, dict[str, int]] = {}
    for cell in missing:
        ups = counts.setdefault(cell.arch, {})
        ups[cell.upsample] = ups.get(cell.upsample, 0) + 1
    parts = [f"{arch}: " + ", ".join(f"{u} {n}" for u, n in ups.items()) for arch, ups in counts.items()]
    return (f"Not finished (left out): {len(missing)} of {total} cells, by architecture and upsampler "
            f"(seeds missing): {'; '.join(parts)}. `summary.json` names each.")


def _document(ablation, out, results, groups, figures, missing, command, device,
              not_applicable=None, comparisons=()) -> list[tuple]:
    classes = results[0].m["classes"]
    front = pareto_front([(g.latency_ms, g.miou) for g in groups])
    cfg = ablation.report
    blocks = [("h1", f"Decoder ablation: {ablation.name}"),
              ("p", f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} from `{ablation.source}`"
                    + (f" by `{command}`" if command else "") + "; numbers in `summary.json`."),
              ("p", f"Machine: {platform.system()}, {describe(threads=True)}; measured on `{device}`."),
              *decision.decision_blocks(list(comparisons), groups, cfg.reference_label, cfg.target_half_width),
              ("h2", "Protocol"), ("ul", _protocol(ablation, results))]
    if missing:
        blocks.append(("p", _not_finished(missing, len(ablation.cells))))
    if not_applicable:
        blocks += [("p", "Not applicable (these combinations do not exist, so nothing was trained):"),
                   ("ul", [f"`{name}`: {why}" for name, why in not_applicable.items()])]
    blocks += _predictions(figures)  # first: what a person looks at
    blocks += [("h2", "Results (mean ± std over seeds)")]
    if max(len(g.runs) for g in groups) == 1:
        blocks.append(("p", "One seed per configuration: the table has no spread to compare against, "
                            "and a difference within seed noise (which this grid does not measure) is "
                            "not a finding. Add seeds to the grid before drawing conclusions."))
    blocks += [("p", "val mIoU, architecture x upsampler:"),
               ("table", *pivot_table(groups, lambda g: _pm(g.miou, g.miou_std))),
               ("p", "val Boundary IoU (d = 2% of the diagonal), architecture x upsampler:"),
               ("table", *pivot_table(groups, lambda g: _pm(g.boundary_iou, g.boundary_iou_std))),
               ("p", "Checkerboard score of the final logits (lower: smoother):"),
               ("table", *pivot_table(groups, lambda g: _pm(g.checkerboard, g.checkerboard_std,
                                                           "{:.2g}"))),
               ("p", "Every configuration:"), ("table", *results_table(groups)),
               ("p", "Pareto front (no configuration is both faster and more accurate): "
                     + ", ".join(f"`{groups[i].name}`" for i in front) + ".")]
    blocks += [("img", figures["miou"], "val mIoU by upsampler"),
               ("img", figures["pareto"], "mIoU against latency"),
               ("img", figures["boundary"], "boundary IoU against mIoU by upsampler"),
               ("img", figures["checkerboard"], "checkerboard score by upsampler"),
               ("h2", "Per-class IoU (mean over seeds)"), ("table", *per_class_table(groups, classes)),
               ("img", figures["heatmap"], "per-class IoU heat map"),
               *decision.per_class_blocks(list(comparisons), classes)]
    blocks += [("h2", "Decoder steps"),
               ("p", "What each configuration's upsampling steps read (`model.upsampling()`):"),
               ("table", *steps_table(groups))]
    blocks += decision.literature_blocks(results, ablation)
    blocks += [("h2", "Measurements"), ("ul", measurement_lines()),
               ("h2", "All runs"), ("table", *runs_table(results, out))]
    return blocks


def _predictions(figures) -> list[tuple]:
    return [("h2", "Predictions"),
            ("p", "The same val images (spread over the split) predicted by every upsampler "
                  "(lowest seed); under each image, a 2x zoom on the half-size window with the most "
                  "ground-truth pixels of "
                  f"{', '.join(figures['thin']) or 'the thin classes (none set: centre crop)'}.")] + \
        [("img", path, f"predictions: {label}") for label, path in figures["qualitative"]]


# ----------------------------------------------------------------------------- entry point

def _thin_ids(classes, names) -> list[int]:
    lower = [c.lower() for c in classes]
    for name in names:
        if name not in lower:
            raise ValueError(f"report.thin_classes: no class {name!r}; classes: {', '.join(classes)}")
    return [lower.index(n) for n in names]


def _figures(ablation, out, results, groups) -> dict:
    classes = results[0].m["classes"]
    palette = np.asarray(results[0].m["palette"], np.uint8)
    figures = {
        "miou": plots.dots(groups, out / "miou_by_upsampler.png", metric="miou", ylabel="val mIoU",
                           title="val mIoU by upsampler (markers: mean ± std over seeds, dots: seeds)"),
        "checkerboard": plots.bars(groups, out / "checkerboard.png", metric="checkerboard",
                                   ylabel="checkerboard score",
                                   title="checkerboard score of the final logits (lower: smoother)"),
        "pareto": plots.pareto(groups, pareto_front([(g.latency_ms, g.miou) for g in groups]),
                               out / "pareto.png"),
        "heatmap": plots.heatmap(groups, classes, out / "per_class_iou.png"),
        "boundary": plots.boundary_vs_miou(groups, out / "boundary_vs_miou.png"),
        "thin": list(ablation.report.thin_classes),
        "qualitative": [],
    }
    thin = _thin_ids(classes, ablation.report.thin_classes)
    for family in dict.fromkeys(g.family for g in groups):
        members = [g for g in groups if g.family == family]
        columns, first = [], None
        for g in members:
            run = min(g.runs, key=lambda r: r.cell.seed)
            pred = load_predictions(run.path)
            first = pred if first is None else first
            columns.append((g.upsample, pred["pred"]))
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", family)
        path = plots.qualitative(columns, first["image"], first["truth"], palette, thin,
                                 out / f"predictions_{slug}.png", title=f"{family} (seed "
                                 f"{min(r.cell.seed for g in members for r in g.runs)})",
                                 classes=classes)
        figures["qualitative"].append((family, path))
    return figures


def write_report(ablation: Ablation, out, *, device="cpu", command: str | None = None,
                 log=print) -> Path:
    """Measure the finished cells and write README.md, report.html and the PNGs into `out`."""
    out = Path(out)
    results, missing = [], []
    not_applicable = {c.config: c.not_applicable for c in ablation.cells if c.not_applicable}
    for cell in ablation.cells:
        path = run_dir(out, cell)
        if cell.not_applicable:
            continue
        if not is_finished(path, cell.recipe):  # a run of another recipe is not this cell's result
            missing.append(cell)
            continue
        log(f"[ablate] measure {cell.name}")
        try:
            measured = measure_run(path, ablation.report, device)
        except RuntimeError as e:  # load_state_dict: the model code changed since training
            raise ValueError(f"{path}: its checkpoint does not fit the current model code "
                             f"({str(e).splitlines()[0][:120]}); move the folder away to "
                             "retrain the cell") from None
        results.append(RunResult(cell, path, measured))
    if not results:
        raise FileNotFoundError(f"{out / 'runs'}: no finished cell (eval.json) to report on")
    groups = group_runs(results)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(ablation, out, results, groups)
    cfg = ablation.report
    comparisons = compare(results, cfg.reference_label, cfg.target_half_width)
    blocks = _document(ablation, out, results, groups, figures, missing, command, device,
                       not_applicable, comparisons)
    summary = decision.summary(ablation, results, comparisons, cfg.reference_label, cfg.target_half_width)
    decision.write_summary(out, {**summary, "not_finished": [c.name for c in missing]})
    (out / MARKDOWN).write_text(to_markdown(blocks, out), encoding="utf-8")
    (out / HTML).write_text(to_html(blocks, f"Decoder ablation: {ablation.name}"), encoding="utf-8")
    log(f"[ablate] report: {out / MARKDOWN}, {out / HTML}")
    return out / MARKDOWN
