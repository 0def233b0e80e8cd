"""The report's figures (matplotlib, Agg), saved as small palette PNGs.

- `dots`: a metric by upsampler, grouped per architecture, on an axis scaled
  to the data: markers are the mean over seeds, error bars the std, dots the
  seeds (mIoU, whose spread is a few hundredths).
- `bars`: the same from zero on a linear axis, each bar labelled with its
  value (the checkerboard score, whose values span orders of magnitude).
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

from zoo.data.base import IGNORE_INDEX
from zoo.data.palettes import colorize

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
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)  # no clipped label
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


def _grouped(groups, title: str, ylabel: str):
    """A figure with one slot per configuration, upsamplers side by side within each
    architecture; returns (fig, ax, {group name: x}, colours)."""
    plt = _plt()
    archs = list(dict.fromkeys(g.family for g in groups))
    ups = list(dict.fromkeys(g.upsample for g in groups))
    colors = upsampler_colors(ups)
    width = 0.8 / len(ups)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(archs) * max(1, len(ups) / 4) + 1.5), 3.4))
    xs = {g.name: archs.index(g.family) + (ups.index(g.upsample) - (len(ups) - 1) / 2) * width
          for g in groups}
    from matplotlib.patches import Patch
    ax.set_xticks(range(len(archs)), archs, fontsize=8)
    ax.set_xlim(-0.5, len(archs) - 0.5)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(color=colors[u], label=u) for u in ups], fontsize=7,
              ncol=min(len(ups), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return fig, ax, xs, colors, width


def _seed_stats(g, metric: str) -> tuple[list[float], float, float]:
    values = [getattr(r, metric) for r in g.runs]
    return values, float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def dots(groups, path: Path, *, metric: str, ylabel: str, title: str) -> Path:
    """Mean over seeds (a bar-free marker) with a ± std error bar and every seed as a dot,
    on an axis scaled to the data: differences of a hundredth stay visible, and no bar
    length suggests a ratio the truncated axis would not bear."""
    fig, ax, xs, colors, _ = _grouped(groups, title, ylabel)
    lows, highs = [], []
    for g in groups:
        values, mean, std = _seed_stats(g, metric)
        x = xs[g.name]
        ax.errorbar(x, mean, yerr=std if std else None, fmt="o", color=colors[g.upsample], markersize=6,
                    markeredgecolor="black", markeredgewidth=0.5, capsize=3, elinewidth=1, zorder=3)
        if len(values) > 1:
            ax.scatter([x + 0.06] * len(values), values, s=7, color="black", zorder=4)
        lows.append(min(values + [mean - std]))
        highs.append(max(values + [mean + std]))
    lo, hi = min(lows), max(highs)
    pad = max(hi - lo, 1e-3) * 0.15
    one_seed = max(len(g.runs) for g in groups) == 1
    ax.set_ylim(lo - pad, hi + pad * (2.5 if one_seed else 1))  # room for the note
    if one_seed:
        import textwrap
        note = textwrap.fill("one seed per configuration: no error bars, and differences within seed "
                             "noise are not findings", width=int(fig.get_figwidth() * 15))
        ax.text(0.01, 0.98, note, transform=ax.transAxes, fontsize=6.5, va="top", color="#a00000")
    fig.tight_layout()
    return save_small(fig, path)


def bars(groups, path: Path, *, metric: str, ylabel: str, title: str) -> Path:
    """Bars from zero on a linear axis (mean over seeds, ± std, seeds as dots), each
    labelled with its value so the small ones stay readable without a log scale."""
    fig, ax, xs, colors, width = _grouped(groups, title, ylabel)
    top = 0.0
    for g in groups:
        values, mean, std = _seed_stats(g, metric)
        x = xs[g.name]
        ax.bar(x, mean, width * 0.9, yerr=std if std else None, color=colors[g.upsample], capsize=2,
               error_kw={"elinewidth": 0.8})
        ax.scatter([x] * len(values), values, s=6, color="black", zorder=3)
        ax.annotate(f"{mean:.1g}", (x, max(values + [mean + std])), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=5.5)
        top = max(top, *values, mean + std)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
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
        _label_front(ax, [groups[i] for i in front])
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


def _label_front(ax, front) -> None:
    """Names of the Pareto points, pointing inward from the axis edges so none is clipped,
    and stacked where neighbours would overlap."""
    x_lo, x_hi = ax.get_xlim()
    ordered = sorted(front, key=lambda g: g.latency_ms)
    for k, g in enumerate(ordered):
        right_half = g.latency_ms > (x_lo + x_hi) / 2
        dy = 4 + 9 * (k % 2)  # neighbours on the front alternate heights
        ax.annotate(g.name, (g.latency_ms, g.miou), fontsize=6, xytext=(-4 if right_half else 4, -dy),
                    textcoords="offset points", ha="right" if right_half else "left", va="top",
                    arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": "0.4"},
                    annotation_clip=False)


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
                ignore_index: int = IGNORE_INDEX, classes=None) -> Path:
    """`columns`: [(label, [prediction (H, W) per image])]; `images` and `truth`
    are lists too (sizes may differ). Each image gets a row and a zoom row; with
    `classes`, a legend of their colours runs under the grid."""
    from matplotlib.patches import Patch, Rectangle

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
        truth_rgb = colorize(truth[i], palette, ignore_index, ignore_color=(0, 0, 0))
        panels = [("image", images[i]), ("ground truth", truth_rgb)]
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
    bottom = 0.005
    if classes:
        handles = [Patch(facecolor=np.asarray(palette[c]) / 255, edgecolor="0.4", label=name)
                   for c, name in enumerate(classes)]
        handles.append(Patch(facecolor="black", edgecolor="0.4", label="not labelled"))
        per_row = max(1, int(fig.get_figwidth() / 1.1))
        rows = -(-len(handles) // per_row)
        extra = 0.2 * rows + 0.1
        fig.set_figheight(fig.get_figheight() + extra)
        bottom = extra / fig.get_figheight()
        fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=6.5, frameon=False,
                   handlelength=1.2, columnspacing=1.0, bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.005, right=0.995, bottom=bottom, top=1 - 0.3 / fig.get_figheight())
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
