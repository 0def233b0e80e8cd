"""Paired comparisons of upsamplers against a reference, seed by seed.

The grid is a paired design: for one seed, every upsampler of an architecture
trains on the same batches, crops, flips and colour jitter in the same order
(`zoo/engine/data.py` seeds them from (seed, epoch, position)) from the same
encoder initialisation (the encoder is built before the head, right after
`seed_everything`; tests/lab/test_ablate_paired.py checks both). So the seed's
share of the noise cancels in the difference `x_up(seed) - x_ref(seed)`, and the
statistics below are taken over those per-seed differences:

- mean difference, its sample SD (n - 1) and standard error SD / sqrt(n);
- a 95% confidence interval by Student's t with n - 1 degrees of freedom:
  mean ± t95(n - 1) · SE (`t95`: a table for df 1..30, a Cornish-Fisher
  expansion beyond; no scipy needed);
- a verdict: "better" (the interval lies above 0), "worse" (below 0), or
  "no difference detected"; then `half_width` is the smallest difference the
  grid could have detected: an observed mean difference of at least the
  half-width (with the same spread) would have put the interval clear of 0;
- `seeds_for(target)`: the number of seeds whose interval would have a
  half-width of at most `target` (default 0.015, i.e. 1.5 points of mIoU), if
  the paired SD stays what it is: the smallest n >= 2 with t95(n-1)·SD/sqrt(n) <= target.

Not paired: the head's own initialisation (its modules differ), and, until
the trainer re-seeds after building the model (`zoo.engine.reproduce.
reseed_after_build`), what training draws from the global RNG, such as
FCN-8s' and PSPNet's dropout masks, whose stream starts where the head's
initialisation left it; on CUDA, kernels without a deterministic
implementation.

Metrics are fractions (mIoU 0.317, not 31.7).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t, t_{0.975}(df), df = 1..30.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.959964
TARGET_HALF_WIDTH = 0.015
BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no difference detected", "too few seeds"


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom:
    the table for df <= 30, beyond it the Cornish-Fisher expansion around the
    normal 1.96 (within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    if df <= len(T95):
        return T95[df - 1]
    z = Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Paired:
    """The statistics of per-seed differences (see the module docstring)."""
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.diffs) if self.diffs else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.diffs) if self.n > 1 else None

    @property
    def half_width(self) -> float | None:
        return t95(self.n - 1) * self.sd / math.sqrt(self.n) if self.n > 1 else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        if self.half_width is None:
            return None
        return self.mean - self.half_width, self.mean + self.half_width

    @property
    def verdict(self) -> str:
        ci = self.ci95
        if ci is None:
            return TOO_FEW
        if ci[0] > 0:
            return BETTER
        if ci[1] < 0:
            return WORSE
        return NO_DIFFERENCE

    def seeds_for(self, target: float = TARGET_HALF_WIDTH) -> int | None:
        return seeds_needed(self.sd, target) if self.sd is not None else None


def paired(a: dict, b: dict) -> Paired:
    """The differences a[seed] - b[seed] over the seeds both have (values not None nor NaN)."""
    def has(values, s):
        return values[s] is not None and math.isfinite(values[s])
    seeds = tuple(sorted(s for s in a.keys() & b.keys() if has(a, s) and has(b, s)))
    return Paired(seeds, tuple(float(a[s]) - float(b[s]) for s in seeds))


def seeds_needed(sd: float, target: float = TARGET_HALF_WIDTH, limit: int = 100_000) -> int:
    """The smallest n >= 2 with t95(n - 1) · sd / sqrt(n) <= target."""
    if target <= 0:
        raise ValueError(f"the target half-width must be positive, got {target}")
    if sd <= 0:
        return 2
    # t95 >= 1.96 gives a lower bound to start from; the exact n is a few steps above it.
    n = max(2, math.ceil((Z975 * sd / target) ** 2))
    while n < limit and t95(n - 1) * sd / math.sqrt(n) > target:
        n += 1
    return n


@dataclass
class Comparison:
    """One upsampler against the reference, for one architecture (and encoder), one metric."""
    arch: str
    encoder: str
    upsampler: str
    reference: str
    metric: str  # "miou", "boundary_iou" or "iou/<class>"
    stats: Paired
    target: float = TARGET_HALF_WIDTH

    def to_json(self) -> dict:
        s = self.stats
        return {"architecture": self.arch, "encoder": self.encoder, "upsampler": self.upsampler,
                "reference": self.reference, "metric": self.metric, "mean_diff": s.mean,
                "ci95": list(s.ci95) if s.ci95 else None, "seeds": list(s.seeds), "n": s.n,
                "sd": s.sd, "half_width": s.half_width, "verdict": s.verdict,
                "seeds_for_target": s.seeds_for(self.target), "target_half_width": self.target,
                "diffs": list(s.diffs)}


def _metric_values(results, metric: str) -> dict:
    """seed -> value of `metric` for the runs of one configuration."""
    if metric == "miou":
        return {r.cell.seed: r.m.get("mIoU") for r in results}
    if metric == "boundary_iou":
        return {r.cell.seed: r.m.get("boundary_iou") for r in results}
    name = metric.split("/", 1)[1]
    return {r.cell.seed: (r.m.get("per_class_iou") or {}).get(name) for r in results}


def metrics_of(results) -> list[str]:
    """miou, boundary_iou, then iou/<class> for the classes of the first run."""
    classes = list((results[0].m.get("per_class_iou") or {}).keys()) if results else []
    return ["miou", "boundary_iou", *(f"iou/{c}" for c in classes)]


def compare(results, reference: str = "bilinear", target: float = TARGET_HALF_WIDTH,
            metrics=None) -> list[Comparison]:
    """Every (architecture, encoder)'s upsamplers against `reference` (an upsampler
    label), over the seeds both finished; `results` are `report.RunResult`s. No
    comparison for a family without a finished reference run."""
    families: dict[tuple[str, str], dict[str, list]] = {}
    for r in results:
        families.setdefault((r.cell.arch, r.cell.encoder), {}).setdefault(r.cell.upsample, []).append(r)
    metrics = metrics or metrics_of(results)
    out = []
    for (arch, encoder), by_up in families.items():
        if reference not in by_up:
            continue
        for up, runs in by_up.items():
            if up == reference:
                continue
            for metric in metrics:
                stats = paired(_metric_values(runs, metric), _metric_values(by_up[reference], metric))
                out.append(Comparison(arch, encoder, up, reference, metric, stats, target))
    return out


def signed(value: float | None, fmt: str = "{:+.3f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def describe(stats: Paired, fmt: str = "{:+.3f}") -> str:
    """`+0.012 [+0.004, +0.020]`, or the mean alone when there is no interval."""
    if stats.ci95 is None:
        return signed(stats.mean, fmt)
    low, high = stats.ci95
    return f"{signed(stats.mean, fmt)} [{signed(low, fmt)}, {signed(high, fmt)}]"
