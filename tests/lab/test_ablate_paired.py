"""The ablation as a paired design: same seed, same batches and encoder
initialisation for every upsampler; the paired statistics (t interval,
verdict, seeds needed) on hand-computed numbers; the report's decision table,
per-class differences, literature section and summary.json; the CPU grid file."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from zoo.lab.ablate.grid import AblationError, Cell, load_ablation
from zoo.lab.ablate.paired import (
    BETTER,
    NO_DIFFERENCE,
    TOO_FEW,
    WORSE,
    Paired,
    compare,
    describe,
    paired,
    seeds_needed,
    t95,
)

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "recipes" / "quickstart.yaml")


# ----------------------------------------------------------------------------- Student's t

@pytest.mark.parametrize("df,value", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262),
                                      (10, 2.228), (29, 2.045), (30, 2.042)])
def test_t_quantiles_are_the_textbook_ones(df, value):
    assert t95(df) == value


@pytest.mark.parametrize("df,value", [(31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799), (10**6, 1.9600)])
def test_t_quantiles_beyond_the_table_are_within_a_thousandth(df, value):
    assert abs(t95(df) - value) < 1e-3
    assert t95(df) < t95(df - 1) or df > 10**5  # decreasing towards the normal 1.96


def test_t_needs_a_degree_of_freedom():
    with pytest.raises(ValueError, match="degree of freedom"):
        t95(0)


# ----------------------------------------------------------------------------- paired statistics

def test_paired_interval_by_hand_no_difference():
    # diffs 0.02, 0.05, 0.01: mean 0.026667, SD sqrt(8.6667e-4 / 2) = 0.020817,
    # SE 0.020817 / sqrt(3) = 0.0120185, half-width 4.303 * SE = 0.051716.
    s = paired({0: 0.50, 1: 0.55, 2: 0.53, 3: 0.9}, {0: 0.48, 1: 0.50, 2: 0.52})
    assert s.seeds == (0, 1, 2) and s.n == 3
    assert s.mean == pytest.approx(0.026667, abs=1e-6)
    assert s.sd == pytest.approx(0.020817, abs=1e-6)
    assert s.half_width == pytest.approx(0.051716, abs=1e-6)
    assert s.ci95 == pytest.approx((-0.025049, 0.078382), abs=1e-6)
    assert s.verdict == NO_DIFFERENCE
    # n = 9: 2.306 * 0.020817 / 3 = 0.016001 > 0.015; n = 10: 2.262 * 0.020817 / sqrt(10) = 0.014891.
    assert s.seeds_for(0.015) == 10


def test_paired_interval_by_hand_better_and_worse():
    # diffs 0.03, 0.04, 0.05: mean 0.04, SD 0.01, half-width 4.303 * 0.01 / sqrt(3) = 0.024843.
    better = Paired((0, 1, 2), (0.03, 0.04, 0.05))
    assert better.ci95 == pytest.approx((0.015157, 0.064843), abs=1e-6)
    assert better.verdict == BETTER
    # n = 4: 3.182 * 0.01 / 2 = 0.01591 > 0.015; n = 5: 2.776 * 0.01 / sqrt(5) = 0.012415.
    assert better.seeds_for() == 5
    worse = Paired((0, 1, 2), (-0.03, -0.04, -0.05))
    assert worse.verdict == WORSE and worse.ci95 == pytest.approx((-0.064843, -0.015157), abs=1e-6)
    assert describe(better) == "+0.040 [+0.015, +0.065]"


def test_paired_edge_cases():
    one = paired({0: 0.5, 1: None}, {0: 0.4, 1: 0.4})  # seed 1 missing a value: left out
    assert one.n == 1 and one.ci95 is None and one.verdict == TOO_FEW and one.seeds_for() is None
    assert one.mean == pytest.approx(0.1) and describe(one) == "+0.100"
    assert paired({0: float("nan"), 1: 0.5}, {0: 0.4, 1: 0.4}).seeds == (1,)
    constant = Paired((0, 1), (0.02, 0.02))  # no spread: the interval is the point
    assert constant.ci95 == (0.02, 0.02) and constant.verdict == BETTER and constant.seeds_for() == 2
    assert Paired((), ()).mean is None
    assert seeds_needed(0.0) == 2
    with pytest.raises(ValueError):
        seeds_needed(0.01, 0)
    # A large SD: beyond the table, where t95 tends to 1.96.
    n = seeds_needed(0.05, 0.015)
    assert t95(n - 1) * 0.05 / math.sqrt(n) <= 0.015 < t95(n - 2) * 0.05 / math.sqrt(n - 1)
    assert 44 <= n <= 47


# ----------------------------------------------------------------------------- comparisons from results

CLASSES = ["sky", "pole"]


def _result(arch, up, seed, miou, biou, pole, tmp_path=Path(".")):
    from zoo.lab.ablate.report import RunResult
    cell = Cell(f"{arch}-e-{up}-s{seed}", arch, "e", up, seed, recipe=None)
    m = {"mIoU": miou, "boundary_iou": biou, "per_class_iou": {"sky": 0.9, "pole": pole},
         "classes": CLASSES, "params": 2e6, "gflops": 1.5, "checkerboard": 0.1, "checkerboard_stride": 2,
         "train_img_s": 10.0, "latency_ms": 3.0}
    return RunResult(cell, tmp_path / cell.name, m)


def _results():
    """unet: carafe better (+0.04 ± small), transposed worse, fade no difference; fcn8s:
    no reference at all. pole IoU of carafe better, seed 2 of fade missing."""
    rows = []
    for seed, (ref, car, tra, fad) in enumerate([(0.50, 0.54, 0.45, 0.52), (0.52, 0.56, 0.46, 0.50),
                                                 (0.48, 0.53, 0.44, None)]):
        rows.append(_result("unet", "bilinear", seed, ref, ref / 2, 0.2))
        rows.append(_result("unet", "carafe", seed, car, ref / 2 + 0.01 * (seed + 1), 0.3 + 0.01 * seed))
        rows.append(_result("unet", "transposed", seed, tra, ref / 2 - 0.02, 0.1))
        if fad is not None:
            rows.append(_result("unet", "fade", seed, fad, ref / 2, 0.2))
        rows.append(_result("fcn8s", "carafe", seed, 0.4, 0.2, 0.1))
    return rows


def test_compare_pairs_by_seed_per_architecture():
    comparisons = compare(_results(), "bilinear")
    assert {c.arch for c in comparisons} == {"unet"}  # fcn8s has no bilinear run
    by = {(c.upsampler, c.metric): c for c in comparisons}
    assert set(by) == {(u, m) for u in ("carafe", "transposed", "fade")
                       for m in ("miou", "boundary_iou", "iou/sky", "iou/pole")}
    carafe = by["carafe", "miou"].stats
    assert carafe.diffs == pytest.approx((0.04, 0.04, 0.05)) and carafe.verdict == BETTER
    assert by["transposed", "miou"].stats.verdict == WORSE
    fade = by["fade", "miou"].stats
    assert fade.seeds == (0, 1) and fade.diffs == pytest.approx((0.02, -0.02)) and fade.verdict == NO_DIFFERENCE
    assert by["carafe", "iou/pole"].stats.verdict == BETTER
    assert by["carafe", "iou/sky"].stats.diffs == (0.0, 0.0, 0.0)
    j = by["carafe", "miou"].to_json()
    assert j["ci95"][0] > 0 and j["seeds"] == [0, 1, 2] and j["reference"] == "bilinear" and j["verdict"] == BETTER


def test_decision_table_lists_the_better_ones_with_their_cost():
    from zoo.lab.ablate.decision import decision_blocks, literature_blocks, per_class_blocks
    from zoo.lab.ablate.report import group_runs
    results = _results()
    comparisons = compare(results, "bilinear")
    blocks = decision_blocks(comparisons, group_runs(results), "bilinear", 0.015)
    assert blocks[0] == ("h2", "Which upsampler should I use")
    (_, header, rows), (_, items) = blocks[2], blocks[3]
    assert header[:5] == ["architecture", "upsampler", "Δ mIoU [95% CI]", "Δ boundary IoU [95% CI]", "seeds"]
    assert "params (M)" in header and "latency (ms)" in header
    assert [r[1] for r in rows] == ["bilinear (reference)", "carafe"]
    assert rows[0][2] == "mIoU 0.500" and rows[1][2].startswith("+0.043 [+0.")
    assert rows[1][header.index("params (M)")] == "2.00"
    assert len(items) == 1 and items[0].startswith("unet vs `bilinear`: no difference detected")
    assert "`fade` +0.000 [" in items[0] and "worse: `transposed` -0.050" in items[0]
    per_class = per_class_blocks(comparisons, CLASSES)
    table = per_class[-1]
    assert table[1] == ["architecture", "upsampler", "sky", "pole"]
    assert table[2][0][:2] == ["unet", "carafe"] and table[2][0][3] == "+0.110↑"

    from types import SimpleNamespace

    from zoo.engine.recipe import load_recipe
    fake = SimpleNamespace(name="fake", grid={"architectures": ["unet"], "encoders": ["e"], "seeds": [0, 1, 2]},
                           cells=[SimpleNamespace(recipe=load_recipe(BASE))])
    lit = literature_blocks(results, fake)
    assert lit[0] == ("h2", "Against the literature") and lit[-1][0] == "table"
    rows = {r[2]: r for r in lit[-1][2]}
    assert rows["carafe"][3] == "+1.14" and rows["carafe"][4] == "+2.04"
    assert rows["fade"][3] == "+2.73" and rows["fade"][4] == "+4.85"
    assert rows["sapa"][3] == "+1.5 to +2.7" and rows["freqfusion"][3] == "+2.40"
    assert rows["carafe"][5].startswith("unet: +4.33 [") and rows["sapa"][5] == "not in this grid"
    assert rows["fade"][5].endswith("(n=2)")


def test_one_seed_decides_nothing():
    from zoo.lab.ablate.decision import decision_blocks, per_class_blocks
    from zoo.lab.ablate.report import group_runs
    results = [r for r in _results() if r.cell.seed == 0]
    comparisons = compare(results, "bilinear")
    blocks = decision_blocks(comparisons, group_runs(results), "bilinear", 0.015)
    assert len(blocks) == 2 and "Fewer than two seeds" in blocks[1][1]
    assert per_class_blocks(comparisons, CLASSES) == []
    blocks = decision_blocks(compare(results, "sapa"), group_runs(results), "sapa", 0.015)
    assert "no architecture has a finished run with the reference upsampler `sapa`" in blocks[1][1]


# ----------------------------------------------------------------------------- the ablation file

def _write(tmp_path, spec: dict) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_report_reference_is_checked_against_the_grid(tmp_path):
    spec = {"base": BASE, "grid": {"upsamplers": ["bilinear", "transposed"]},
            "report": {"reference": "transposed", "target_half_width": 0.02}}
    ablation = load_ablation(_write(tmp_path, spec))
    assert ablation.report.reference_label == "transposed" and ablation.report.target_half_width == 0.02
    assert load_ablation(_write(tmp_path, {**spec, "report": {}})).report.reference_label == "bilinear"
    with pytest.raises(AblationError, match=r"'report.reference': 'carafe' is not among the grid's upsamplers"):
        load_ablation(_write(tmp_path, {**spec, "report": {"reference": "carafe"}}))
    with pytest.raises(AblationError, match=r"report.target_half_width"):
        load_ablation(_write(tmp_path, {**spec, "report": {"target_half_width": 0}}))
    # An ablation without bilinear and no reference set still loads (its report says so).
    load_ablation(_write(tmp_path, {"base": BASE, "grid": {"upsamplers": ["transposed"]}}))


def test_paired_cpu_grid_file():
    ablation = load_ablation(REPO / "recipes" / "ablation_camvid_paired_cpu.yaml")
    g = ablation.grid
    assert g["architectures"] == ["unet", "fcn8s"] and g["encoders"] == ["resnet10t"] and g["seeds"] == [0, 1, 2, 3, 4]
    from decoders.upsample import UPSAMPLERS
    assert set(g["upsamplers"]) == set(UPSAMPLERS.names()) - {"unpool"}
    assert not any(c.not_applicable for c in ablation.cells)
    assert ablation.report.reference_label == "bilinear" and ablation.report.target_half_width == 0.015
    for cell in ablation.cells:
        r = cell.recipe
        assert r.train.iters == 1500 and list(r.eval.scales) == [0.5] and r.eval.max_images is None
        assert r.data.train_transforms[0]["params"] == {"height": 180, "width": 240}
        assert r.data.options == {"holdout": "drives"}  # scored on other stretches of road
    fcn = next(c for c in ablation.cells if c.arch == "fcn8s").recipe.model
    assert fcn["fc_channels"] == 64 and fcn.get("decoder_channels") is None


def test_the_report_says_where_it_scores_and_counts_what_is_left():
    from zoo.lab.ablate.report import _not_finished, _protocol
    ablation = load_ablation(REPO / "recipes" / "ablation_camvid_paired_cpu.yaml")
    first = _protocol(ablation, [])[0]
    assert ("data `camvid` (`camvid`, holdout: drives), trained on `train`, scored on `val` as `holdout: "
            "drives` draws it (frames of other sequences)") in first
    left = [c for c in ablation.cells if not (c.arch == "unet" and c.seed == 0 and c.upsample in ("bilinear", "sapa"))]
    line = _not_finished(left, len(ablation.cells))
    assert line.startswith("Not finished (left out): 118 of 120 cells, by architecture and upsampler (seeds missing): "
                           "unet: bilinear 4, nearest 5, ")
    assert "sapa 4" in line and "; fcn8s: bilinear 5, " in line and "unet-resnet10t" not in line


# ----------------------------------------------------------------------------- the paired design

AUGMENT = [
    {"name": "RandomScale", "params": {"scale_limit": [-0.25, 0.5], "p": 1.0}},
    {"name": "PadIfNeeded", "params": {"min_height": 32, "min_width": 32, "border_mode": 0, "fill": 0,
                                       "fill_mask": 255}},
    {"name": "RandomCrop", "params": {"height": 32, "width": 32}},
    {"name": "HorizontalFlip", "params": {"p": 0.5}},
    {"name": "ColorJitter", "params": {"brightness": 0.25, "contrast": 0.25, "saturation": 0.25, "hue": 0.03,
                                       "p": 0.8}}]


def _start(tmp_path, arch, up, seed):
    """A tiny cell's trainer as built for training: encoder weights at init, first two batches,
    and the global torch RNG state training starts drawing from."""
    import torch

    from zoo.engine.recipe import load_recipe, recipe_from_dict, recipe_to_dict
    from zoo.engine.trainer import Trainer
    raw = recipe_to_dict(load_recipe(BASE))
    raw["data"].update(options={"num_images": 8, "size": 32}, batch_size=4, num_workers=0,
                       train_transforms=copy.deepcopy(AUGMENT))
    raw["train"].update(seed=seed, iters=2, warmup_iters=0, threads=1)
    extra = {"decoder_channels": [8, 8, 8, 8, 8]} if arch == "unet" else {"fc_channels": 8}
    raw["model"] = {"name": arch, "encoder": "test_resnet", "upsample": up, "encoder_weights": None, **extra}
    trainer = Trainer(recipe_from_dict(raw, "paired"), tmp_path / f"{arch}-{up}-s{seed}", resume=False)
    try:
        rng = torch.get_rng_state().clone()
        encoder = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
        stream = iter(trainer.loader())
        batches = [next(stream) for _ in range(2)]
    finally:
        trainer.release()
    return encoder, batches, rng


@pytest.mark.parametrize("arch", ["unet", "fcn8s"])
def test_same_seed_same_batches_and_encoder_init_for_every_upsampler(tmp_path, arch):
    import torch
    enc0, batches0, _ = _start(tmp_path, arch, "bilinear", 0)
    for up in ("transposed", "carafe"):
        enc, batches, _ = _start(tmp_path, arch, up, 0)
        assert enc.keys() == enc0.keys() and all(torch.equal(enc[k], enc0[k]) for k in enc0)
        for a, b in zip(batches, batches0):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
            assert a["name"] == b["name"]
    # The check can fail: another seed, other batches and another initialisation.
    enc1, batches1, _ = _start(tmp_path, arch, "bilinear", 1)
    assert not all(torch.equal(enc1[k], enc0[k]) for k in enc0)
    assert not torch.equal(batches1[0]["image"], batches0[0]["image"])


# ----------------------------------------------------------------------------- summary.json, end to end

TINY = ["train.iters=2", "data.options={num_images: 8, size: 32}", "data.batch_size=4",
        "model.decoder_channels=[8, 8, 8, 8, 8]", "data.num_workers=0", "train.warmup_iters=0",
        "train.log_interval=1", "train.checkpoint_interval=2", "eval.interval=2", "log.num_images=0",
        "train.threads=1", "report.num_images=1", "report.latency_runs=1", "report.checkerboard_images=1"]


@pytest.mark.train
def test_tiny_grid_writes_summary_and_opens_with_the_decision(tmp_path):
    import torch

    from zoo.lab.ablate import ablate
    spec = {"base": BASE, "grid": {"upsamplers": ["bilinear", "transposed"], "seeds": [0, 1]},
            "report": {"reference": "bilinear"}}
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        ablate(_write(tmp_path, spec), out, overrides=TINY, measure_device="cpu", log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "bilinear" and summary["target_half_width"] == 0.015
    cells = summary["cells"]
    assert [(c["upsampler"], c["seed"]) for c in cells] == [("bilinear", 0), ("bilinear", 1),
                                                           ("transposed", 0), ("transposed", 1)]
    for c in cells:
        assert c["architecture"] == "unet" and 0 <= c["miou"] <= 1 and set(c["per_class_iou"]) >= {"pole"}
    by = {c["metric"]: c for c in summary["comparisons"]}
    assert {"miou", "boundary_iou", "iou/pole"} <= set(by)
    miou = by["miou"]
    assert (miou["architecture"], miou["upsampler"], miou["reference"], miou["seeds"]) == \
        ("unet", "transposed", "bilinear", [0, 1])
    runs = {(c["upsampler"], c["seed"]): c["miou"] for c in cells}
    diffs = [runs["transposed", s] - runs["bilinear", s] for s in (0, 1)]
    assert miou["mean_diff"] == pytest.approx(sum(diffs) / 2)
    half = 12.706 * abs(diffs[0] - diffs[1]) / 2  # n = 2: SD = |d0 - d1| / sqrt(2), SE = SD / sqrt(2)
    assert miou["ci95"] == pytest.approx([miou["mean_diff"] - half, miou["mean_diff"] + half])

    md = (out / "README.md").read_text()
    first = md.index("## ")
    assert md[first:].startswith("## Which upsampler should I use")
    assert md.index("## Which upsampler") < md.index("## Protocol") < md.index("## Results")
    table = md[md.index("| architecture | upsampler | Δ mIoU"):].splitlines()
    assert table[2].startswith("| unet | bilinear (reference) | mIoU ")
    assert "## Per-class IoU differences against bilinear" in md and "## Against the literature" in md
    assert "| FADE paper" in md and "summary.json" in md
    assert "Which upsampler should I use" in (out / "report.html").read_text()


def test_dropout_masks_are_paired_too(tmp_path):
    import torch
    rng = _start(tmp_path, "fcn8s", "bilinear", 0)[2]
    assert torch.equal(_start(tmp_path, "fcn8s", "carafe", 0)[2], rng)


def test_reseed_after_build_forgets_what_the_build_drew():
    import torch

    from zoo.engine.reproduce import reseed_after_build
    torch.manual_seed(0)
    torch.randn(10)
    reseed_after_build(0)
    a = torch.rand(4)
    torch.manual_seed(0)
    torch.randn(1000)
    reseed_after_build(0)
    assert torch.equal(torch.rand(4), a)
    reseed_after_build(1)
    assert not torch.equal(torch.rand(4), a)


def test_categories_and_summary_without_nan(tmp_path):
    from zoo.lab.ablate.decision import MIXED, category, write_summary
    from zoo.lab.ablate.paired import Comparison

    def comp(metric, diffs):
        return Comparison("unet", "e", "carafe", "bilinear", metric, Paired(tuple(range(len(diffs))), diffs))
    up, down, flat = (0.03, 0.04, 0.05), (-0.03, -0.04, -0.05), (0.02, -0.02, 0.0)
    assert category(comp("miou", flat), comp("boundary_iou", up)) == BETTER
    assert category(comp("miou", up), comp("boundary_iou", down)) == MIXED
    assert category(comp("miou", flat), comp("boundary_iou", down)) == WORSE
    assert category(comp("miou", flat), None) == NO_DIFFERENCE
    assert category(comp("miou", (0.1,)), None) == TOO_FEW
    path = write_summary(tmp_path, {"cells": [{"per_class_iou": {"ball": float("nan"), "sky": 0.5}}]})
    assert json.loads(path.read_text()) == {"cells": [{"per_class_iou": {"ball": None, "sky": 0.5}}]}
