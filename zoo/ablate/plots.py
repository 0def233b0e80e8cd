"""The report's figures (matplotlib, Agg), saved as small palette PNGs.

- `bars`: a metric by upsampler, grouped per architecture; bars are the mean
  over seeds, error bars the std, dots the seeds.
- `pareto`: mIoU against latency, one point per configuration, the Pareto
  front (lowest latency for its mIoU) drawn as a step line.
- `heatmap`: per-class IoU, configurations x classes.
- `qualitative`: the same val images (rows) predicted by every upsampler of
  one architecture (columns), each image followed by a zoom on the window
  where the thin classes have the most ground-truth pixels.
- `boundary_vs_miou`: Boundary IoU against mIoU, one point per configuration
  (colour: upsampler, marker: architecture), seeds as small dots: where
  upsamplers differ at equal mIoU.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

DPI = 100


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_small(fig, path: Path, colors: int = 256) -> Path:
    """Save a figure as an 8-bit palette PNG (a third of the RGB size or less)."""
    from PIL import Image
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path


def upsampler_colors(upsamplers) -> dict:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {u: cmap(i % 10) for i, u in enumerate(upsamplers)}


def bars(groups, path: Path, *, metric: str, ylabel: str, title: str, log: bool = False) -> Path:
    """`groups`: the aggregated configurations (report.Group), in grid order."""
    plt = _plt()
    archs = list(dict.fromkeys(g.family for g in groups))
    ups = list(dict.fromkeys(g.upsample for g in groups))
    colors = upsampler_colors(ups)
    width = 0.8 / len(ups)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(archs) * max(1, len(ups) / 4) + 1.5), 3.2))
    for g in groups:
        x = archs.index(g.family) + (ups.index(g.upsample) - (len(ups) - 1) / 2) * width
        values = [getattr(r, metric) for r in g.runs]
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        ax.bar(x, mean, width * 0.9, yerr=std, color=colors[g.upsample], capsize=2,
               error_kw={"elinewidth": 0.8})
        ax.scatter([x] * len(values), values, s=6, color="black", zorder=3)
    from matplotlib.patches import Patch
    handles = [Patch(color=colors[u], label=u) for u in ups]
    if log:
        ax.set_yscale("log", nonpositive="clip")
    ax.set_xticks(range(len(archs)), archs, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, ncol=min(len(ups), 4), loc="upper center",
              bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return save_small(fig, path)


def pareto(groups, front: list[int], path: Path) -> Path:
    plt = _plt()
    archs = list(dict.fromkeys(g.family for g in groups))
    ups = list(dict.fromkeys(g.upsample for g in groups))
    colors = upsampler_colors(ups)
    markers = "osD^vP*Xh<>"
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for g in groups:
        ax.scatter(g.latency_ms, g.miou, color=colors[g.upsample],
                   marker=markers[archs.index(g.family) % len(markers)], s=28, zorder=3,
                   edgecolor="black", linewidth=0.4)
    pts = sorted((groups[i].latency_ms, groups[i].miou) for i in front)
    if pts:
        xs, ys = zip(*pts)
        ax.step(xs, ys, where="post", color="black", linewidth=0.8, alpha=0.6, label="Pareto front")
        for i in front:
            ax.annotate(groups[i].name, (groups[i].latency_ms, groups[i].miou), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    from matplotlib.patches import Patch
    for a in archs:
        ax.scatter([], [], marker=markers[archs.index(a) % len(markers)], color="white",
                   edgecolor="black", label=a)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=colors[u], label=u) for u in ups]
    ax.set_xlabel("inference latency (ms, batch 1)", fontsize=8)
    ax.set_ylabel("val mIoU (mean over seeds)", fontsize=8)
    ax.set_title("mIoU against latency", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
    fig.tight_layout()
    return save_small(fig, path)


def heatmap(groups, classes, path: Path) -> Path:
    plt = _plt()
    values = np.array([[np.nan if g.per_class[c] is None else g.per_class[c] for c in classes]
                       for g in groups], np.float64)
    fig, ax = plt.subplots(figsize=(1.8 + 0.5 * len(classes), 0.9 + 0.22 * len(groups)))
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(groups)), [g.name for g in groups], fontsize=6)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="black" if values[i, j] > 0.6 else "white")
    ax.set_title("per-class val IoU (mean over seeds)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return save_small(fig, path)


def crop_window(truth: np.ndarray, thin_ids, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left (y, x) of the `size` window holding the most pixels of `thin_ids`
    (the centre window when there are none)."""
    h, w = truth.shape
    ch, cw = min(size[0], h), min(size[1], w)
    hits = np.isin(truth, list(thin_ids)).astype(np.int64)
    if not hits.any():
        return (h - ch) // 2, (w - cw) // 2
    integral = np.pad(hits.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw])
    y, x = np.unravel_index(np.argmax(counts), counts.shape)
    return int(y), int(x)


def qualitative(columns, images, truth, palette, thin_ids, path: Path, *, title: str,
                ignore_index: int = 255) -> Path:
    """`columns`: [(label, [prediction (H, W) per image])]; `images` and `truth`
    are lists too (sizes may differ). Each image gets a row and a zoom row."""
    from matplotlib.patches import Rectangle

    from zoo.data.palettes import colorize
    plt = _plt()
    n, (h, w) = len(truth), truth[0].shape
    ncols = 2 + len(columns)
    scale = max(1.0, 128 / w)  # panels at least 128 px wide
    fig, axes = plt.subplots(2 * n, ncols, squeeze=False,
                             figsize=(ncols * w * scale / DPI, 2 * n * h * scale / DPI + 0.35),
                             gridspec_kw={"wspace": 0.03, "hspace": 0.03})
    for i in range(n):
        zoom = (truth[i].shape[0] // 2, truth[i].shape[1] // 2)
        y, x = crop_window(truth[i], thin_ids, zoom)
        panels = [("image", images[i]), ("ground truth", colorize(truth[i], palette, ignore_index, ignore_color=(0, 0, 0)))]
        panels += [(label, colorize(pred[i], palette, ignore_index, ignore_color=(0, 0, 0))) for label, pred in columns]
        for j, (label, panel) in enumerate(panels):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            top.imshow(panel, interpolation="nearest")
            top.add_patch(Rectangle((x - 0.5, y - 0.5), zoom[1], zoom[0], fill=False,
                                    edgecolor="white", linewidth=0.8))
            bottom.imshow(panel[y:y + zoom[0], x:x + zoom[1]], interpolation="nearest")
            if i == 0:
                top.set_title(label, fontsize=7, pad=2)
            if j == 0:
                bottom.text(2, 2, "zoom", color="white", fontsize=6, va="top",
                            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8, y=0.995)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 0.3 / fig.get_figheight())
    return save_small(fig, path)


def boundary_vs_miou(groups, path: Path) -> Path:
    """Boundary IoU (y) against mIoU (x) per configuration; configurations whose runs
    carry no boundary metrics are left out, and said so in the title."""
    plt = _plt()
    archs = list(dict.fromkeys(g.family for g in groups))
    ups = list(dict.fromkeys(g.upsample for g in groups))
    colors = upsampler_colors(ups)
    markers = "osD^vP*Xh<>"
    shown = [g for g in groups if g.boundary_iou is not None and g.miou is not None]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for g in shown:
        marker = markers[archs.index(g.family) % len(markers)]
        seeds = [(r.m["mIoU"], r.m["boundary_iou"]) for r in g.runs if r.m.get("boundary_iou") is not None]
        if len(seeds) > 1:
            ax.scatter(*zip(*seeds), color=colors[g.upsample], marker=marker, s=8, alpha=0.5, zorder=2)
        ax.scatter(g.miou, g.boundary_iou, color=colors[g.upsample], marker=marker, s=34, zorder=3,
                   edgecolor="black", linewidth=0.4)
    missing = len(groups) - len(shown)
    ax.set(xlabel="val mIoU (mean over seeds)", ylabel="val boundary IoU (mean over seeds)")
    ax.set_title("boundary IoU against mIoU" + (f" ({missing} configuration(s) without boundary "
                                               "metrics left out)" if missing else ""), fontsize=9)
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(handles=_legend_handles(archs, markers, ups, colors), fontsize=6, loc="center left",
              bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save_small(fig, path)


def _legend_handles(archs, markers, ups, colors) -> list:
    """One entry per architecture (its marker, unfilled), then one per upsampler (its colour)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    return ([Line2D([], [], linestyle="", marker=markers[i % len(markers)], markerfacecolor="white",
                    markeredgecolor="black", label=a) for i, a in enumerate(archs)]
            + [Patch(color=colors[u], label=u) for u in ups])
