"""Decoder ablations: ablation-file validation, the grid runner end to end on
the quickstart grid (shortened), resume/skip, the report, and the numbers the
report relies on (Pareto front, crop window, checkerboard stride)."""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.lab.ablate.grid import AblationError, load_ablation
from zoo.lab.ablate.plots import crop_window
from zoo.lab.ablate.report import pareto_front

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "recipes" / "ablation_quickstart.yaml"
SHORT = ["train.iters=4", "data.options={num_images: 8, size: 32}", "data.batch_size=4",
         "model.decoder_channels=[16, 16, 8, 8, 8]",
         "data.num_workers=0", "train.warmup_iters=0", "train.log_interval=2",
         "train.checkpoint_interval=4", "eval.interval=4", "log.num_images=0",
         "report.num_images=2", "report.latency_runs=2", "report.checkerboard_images=2"]


def _write(tmp_path, spec: dict) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


BASE = str(REPO / "recipes" / "quickstart.yaml")


@pytest.mark.parametrize("spec,expected", [
    ({"base": BASE, "grids": {}}, ["unknown key 'grids'", "did you mean 'grid'"]),
    ({"base": BASE, "grid": {"seed": [0]}}, ["unknown key 'grid.seed'", "did you mean 'grid.seeds'"]),
    ({"base": BASE, "grid": {"seeds": [0, "one"]}}, ["'grid.seeds[1]'", "expected int"]),
    ({"base": BASE, "grid": {"upsamplers": ["bilinar"]}}, ["'grid.upsamplers[0]'", "bilinear"]),
    ({"base": BASE, "grid": {"architectures": ["unet", "fcn8"]}}, ["'grid.architectures[1]'", "fcn8s"]),
    ({"base": BASE, "grid": {"architectures": ["unet", "fcn8s"]}},
     ["cell fcn8s-test_resnet-bilinear-s0", "model.decoder_channels", "arch_overrides"]),
    ({"base": BASE, "arch_overrides": {"pspnet": {"model.head_channels": 64}}},
     ["unknown key 'arch_overrides.pspnet'"]),
    ({"base": BASE, "arch_overrides": {"unet": {"train.iterz": 3}}}, ["train.iterz"]),
    ({"base": BASE, "report": {"num_image": 2}}, ["unknown key 'report.num_image'"]),
    ({"grid": {"seeds": [0]}}, ["key 'base'"]),
])
def test_ablation_file_errors_name_the_key(tmp_path, spec, expected):
    with pytest.raises(AblationError) as info:
        load_ablation(_write(tmp_path, spec))
    message = str(info.value)
    assert "\n" not in message
    for text in expected:
        assert text in message


def test_cells_are_typed_recipes_named_by_the_grid():
    ablation = load_ablation(QUICK, ["train.iters=7", "train.warmup_iters=2", "report.num_images=3"])
    names = [c.name for c in ablation.cells]
    assert names == [f"unet-test_resnet-{u}-s0" for u in ("transposed", "guided_unpool", "bilinear", "pixelshuffle")]
    for cell in ablation.cells:
        r = cell.recipe
        assert (r.model["name"], r.model["encoder"], r.model["upsample"]) == ("unet", "test_resnet", cell.upsample)
        assert r.train.seed == 0 and r.train.iters == 7
        assert (r.log.group, r.log.name) == ("quickstart_upsamplers", cell.name)
    assert ablation.report.thin_classes == ["pole"] and ablation.report.num_images == 3
    with pytest.raises(AblationError, match=r"^--override report.num_images: key 'report.num_images': must be >= 1"):
        load_ablation(QUICK, ["report.num_images=0"])  # the value's place, not the file's


@pytest.mark.train
@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("ablation_*.yaml")), ids=lambda p: p.name)
def test_shipped_ablation_files_load(path):
    ablation = load_ablation(path)
    grid = ablation.grid
    assert len(ablation.cells) == np.prod([len(grid[k]) for k in grid])
    assert {"transposed", "bilinear", "pixelshuffle"} <= set(grid["upsamplers"])
    assert {"unpool", "guided_unpool"} & set(grid["upsamplers"])


def test_combinations_that_do_not_exist_are_marked_not_trained(tmp_path):
    """unpool on an encoder without max-pool switches: listed with the reason, never trained."""
    from zoo.lab.ablate.grid import train_cells
    path = _write(tmp_path, {"base": BASE, "grid": {"upsamplers": ["unpool", "bilinear"]}})
    ablation = load_ablation(path)
    na = {c.upsample: c.not_applicable for c in ablation.cells}
    assert "needs max-pool switches" in na["unpool"] and "guided_unpool" in na["unpool"]
    assert na["bilinear"] == ""
    logged = []
    only_na = type(ablation)(**{**vars(ablation), "cells": [c for c in ablation.cells if c.not_applicable]})
    assert train_cells(only_na, tmp_path / "out", log=logged.append) == []
    assert "not applicable" in logged[0] and not (tmp_path / "out" / "runs").exists()


def test_pareto_front_hand_example():
    # (latency, mIoU): 1 beats 3 (same mIoU, faster) and 5 (faster and better);
    # 0 beats 2; 4 is the fastest.
    points = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.6), (5, 0.3), (20, 0.55)]
    assert pareto_front(points) == [4, 0, 1]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]  # equal points do not dominate each other


def test_crop_window_centres_on_thin_classes():
    truth = np.zeros((16, 20), np.uint8)
    truth[10:16, 15] = 4  # a pole near the bottom right
    truth[0, 0] = 6
    for thin in ([4], [4, 6]):
        y, x = crop_window(truth, thin, (8, 10))
        assert 0 <= y <= 8 and 0 <= x <= 10
        assert (truth[y:y + 8, x:x + 10] == 4).sum() == 6  # the whole pole
    assert crop_window(truth, [9], (8, 10)) == (4, 5)  # no such pixels: the centre


@pytest.mark.parametrize("arch,kwargs,stride", [
    ("unet", {"decoder_channels": [8, 8, 8, 8, 8]}, 2),
    ("fcn8s", {"fc_channels": 8}, 8),
    ("pspnet", {"head_channels": 8, "aux_head": False}, 8),
])
def test_checkerboard_stride_is_the_last_upsampling_factor(arch, kwargs, stride):
    import zoo
    from zoo.lab.ablate.measure import final_upsampling_factor
    model = zoo.create(arch, encoder="test_resnet", num_classes=3, upsample="transposed", **kwargs)
    assert final_upsampling_factor(model) == stride


def _ablate_cli():
    spec = importlib.util.spec_from_file_location("ablate_cli", REPO / "tools" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _first_table(text: str) -> list[str]:
    """The body rows of the first Markdown table in `text`."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start + 2:end]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread; on a busy machine it costs."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.train
def test_quickstart_grid_end_to_end_resumes_and_reports(tmp_path, capsys, one_thread):
    from zoo.lab.ablate import ablate
    out = tmp_path / "quick"
    args = [str(QUICK), "--out", str(out)] + [a for o in SHORT for a in ("--override", o)]
    _ablate_cli()(args)
    cells = [c.name for c in load_ablation(QUICK).cells]
    for name in cells:
        run = out / "runs" / name
        assert (run / "eval.json").is_file() and (run / "recipe.yaml").is_file()
        assert (run / "ablation.json").is_file()

    md = (out / "README.md").read_text()
    assert md.index("## Predictions") < md.index("## Results")  # what a person looks at comes first
    assert "One seed per configuration" in md  # the grid has seeds: [0]
    results = _first_table(md.split("## Results", 1)[1])
    assert len(results) == 1 and results[0].startswith("| unet | ")  # mIoU, arch x upsampler
    assert len(results[0].split(" | ")) == 5
    configs = _first_table(md.split("Every configuration:", 1)[1])
    assert len(configs) == 4 and all("unet | test_resnet" in r for r in configs)
    runs = _first_table(md.split("## All runs", 1)[1])
    assert [r.split(" | ")[0].strip("| ") for r in runs] == cells
    m = json.loads((out / "runs" / cells[0] / "ablation.json").read_text())
    assert m["checkerboard_stride"] == 2 and 0.0 <= m["checkerboard"] <= 1.0
    assert m["key"]["device"] == "cpu" and m["key"]["threads"] == 1  # another machine measures afresh
    assert m["params"] > 0 and m["gflops"] > 0 and m["latency_ms"] > 0 and m["train_img_s"] > 0
    ev = json.loads((out / "runs" / cells[0] / "eval.json").read_text())
    assert m["boundary_iou"] == ev["boundary_iou"] and 0.0 <= m["boundary_iou"] <= 1.0
    for png in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / png).is_file()

    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) >= 5 and not re.search(r"src='(?!data:)", page)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert page.count("<tr>") == 3 * (1 + 1) + 4 * (1 + 4)  # 3 pivots; configs, per-class, steps, runs
    boundary = _first_table(md.split("val Boundary IoU", 1)[1])    # arch x upsampler, like mIoU
    assert len(boundary) == 1 and len(boundary[0].split(" | ")) == 5 and "n/a" not in boundary[0]
    assert "boundary IoU" in md.split("Every configuration:", 1)[1].splitlines()[2]
    assert (out / "boundary_vs_miou.png").is_file() and "boundary_vs_miou.png" in md

    # Second invocation: nothing retrains; a cell without eval.json (killed after its
    # last checkpoint) resumes from it instead of starting over.
    mtimes = {n: (out / "runs" / n / "eval.json").stat().st_mtime_ns for n in cells}
    killed = out / "runs" / cells[1]
    (killed / "eval.json").unlink()
    rows_before = (killed / "metrics.jsonl").read_text().count('"loss"')
    capsys.readouterr()
    ablate(QUICK, out, overrides=SHORT)
    log = capsys.readouterr().out
    for name in cells:
        if name != cells[1]:
            assert f"skip {name}: finished" in log
            assert (out / "runs" / name / "eval.json").stat().st_mtime_ns == mtimes[name]
    assert f"train {cells[1]}" in log and "resumed from" in log
    assert (killed / "eval.json").is_file()
    assert (killed / "metrics.jsonl").read_text().count('"loss"') == rows_before

    # An edited ablation file: its cells are not the runs on disk, which neither count as
    # finished (training resumes them, or names the key they cannot follow) nor get reported.
    from zoo.engine.recipe import recipe_from_dict, recipe_to_dict
    from zoo.engine.resume import first_difference
    from zoo.lab.ablate.grid import is_finished
    cell = load_ablation(QUICK, overrides=SHORT).cells[0]
    raw = recipe_to_dict(cell.recipe)
    iters = raw["train"]["iters"]
    assert is_finished(out / "runs" / cell.name, cell.recipe)
    raw["train"].update(iters=iters + 2, device="cpu", threads=2)  # where it runs is not what it trained
    longer = recipe_from_dict(raw)
    assert not is_finished(out / "runs" / cell.name, longer)
    assert first_difference(longer, out / "runs" / cell.name) == f"train.iters: {iters} -> {iters + 2}"


@pytest.mark.slow
def test_cells_side_by_side_as_subprocesses(tmp_path):
    out = tmp_path / "jobs"
    cmd = [sys.executable, str(REPO / "tools" / "ablate.py"), str(QUICK), "--out", str(out),
           "--jobs", "2"] + [a for o in SHORT for a in ("--override", o)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for cell in load_ablation(QUICK).cells:
        assert (out / "runs" / cell.name / "train.log").is_file()
        assert (out / "runs" / cell.name / "eval.json").is_file()


def test_runs_without_boundary_metrics_read_n_a(tmp_path):
    """Cells evaluated before boundary metrics existed: 'n/a' in the tables, left out of the plot."""
    from zoo.lab.ablate.grid import Cell
    from zoo.lab.ablate.plots import boundary_vs_miou
    from zoo.lab.ablate.report import RunResult, group_runs, results_table

    def result(up, seed, miou, biou):
        cell = Cell(f"unet-e-{up}-s{seed}", "unet", "e", up, seed, recipe=None)
        m = {"mIoU": miou, "boundary_iou": biou, "params": 1e6, "gflops": 1.0, "checkerboard": 0.1,
             "checkerboard_stride": 2, "train_img_s": 1.0, "latency_ms": 2.0}
        return RunResult(cell, tmp_path, m)

    groups = group_runs([result("bilinear", 0, 0.5, 0.25), result("bilinear", 1, 0.7, 0.35),
                         result("fade", 0, 0.6, None)])
    header, rows = results_table(groups)
    col = header.index("boundary IoU")
    assert rows[0][col] == "0.300 ± 0.071" and rows[1][col] == "n/a"
    assert boundary_vs_miou(groups, tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_literature_upsampler_grid_is_one_architecture_all_upsamplers():
    ablation = load_ablation(REPO / "recipes" / "ablation_camvid_upsamplers_cpu.yaml")
    assert ablation.grid["architectures"] == ["unet"]
    assert ablation.grid["upsamplers"] == ["transposed", "guided_unpool", "bilinear", "pixelshuffle",
                                           "carafe", "dysample", "fade", "sapa", "guided_indexnet",
                                           "a2u", "freqfusion"]
    assert len(ablation.cells) == 22 and not any(c.not_applicable for c in ablation.cells)
    assert ablation.cells[0].recipe.data.val_transforms[0]["params"] == {"height": 96, "width": 128}


def test_grid_sweeps_upsampler_options_as_it_sweeps_names(tmp_path):
    import torch

    import zoo
    ups = ["pixelshuffle", {"name": "pixelshuffle", "icnr": False}, {"name": "carafe", "up_kernel": 3}]
    ablation = load_ablation(_write(tmp_path, {"base": BASE, "grid": {"upsamplers": ups}}))
    assert [c.name for c in ablation.cells] == ["unet-test_resnet-pixelshuffle-s0",
                                                "unet-test_resnet-pixelshuffle-icnr_off-s0",
                                                "unet-test_resnet-carafe-up_kernel_3-s0"]
    assert [c.recipe.model["upsample"] for c in ablation.cells] == ups
    icnr, plain, carafe = (zoo.create(**{**c.recipe.model, "num_classes": 3}) for c in ablation.cells)
    w_icnr, w_plain = (m.head.stages[-1].up.conv.weight for m in (icnr, plain))
    assert torch.equal(w_icnr[0], w_icnr[1]) and not torch.equal(w_plain[0], w_plain[1])  # ICNR repeats
    assert carafe.head.stages[-1].up.k == 3
    bad = {"base": BASE, "grid": {"upsamplers": [{"name": "carafe", "up_kernal": 3}]}}
    with pytest.raises(AblationError, match=r"cell unet-test_resnet-carafe-up_kernal_3-s0: .*up_kernal; valid"):
        load_ablation(_write(tmp_path, bad))
    twice = {"base": BASE, "grid": {"upsamplers": ["carafe", {"name": "carafe"}]}}
    with pytest.raises(AblationError, match=r"'grid.upsamplers': duplicate entries"):
        load_ablation(_write(tmp_path, twice))
    with pytest.raises(AblationError, match=r"'grid.upsamplers\[0\]': expected an upsampler name or a mapping"):
        load_ablation(_write(tmp_path, {"base": BASE, "grid": {"upsamplers": [{"icnr": False}]}}))


def test_an_outside_measurement_registers_and_gets_a_column(tmp_path):
    """`register_measurement` adds a number to every cell: its description under
    Measurements, a column in the tables, a cache key that changes with it."""
    from zoo.lab.ablate import MEASUREMENTS, register_measurement
    from zoo.lab.ablate.grid import Cell, ReportConfig
    from zoo.lab.ablate.measure import MeasureContext, _settings, measurement_lines
    from zoo.lab.ablate.report import RunResult, group_runs, results_table, runs_table

    before = _settings(ReportConfig())
    register_measurement("max_logit", "max logit: the largest logit on the first val image.",
                         lambda ctx: float(ctx.model(ctx.image).max()), label="max logit", fmt="{:.1f}")
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_measurement("max_logit", "again")
        assert "max_logit" in MEASUREMENTS and "miou" in MEASUREMENTS
        assert measurement_lines()[-1].startswith("max logit:") and measurement_lines()[0].startswith("val mIoU")
        assert _settings(ReportConfig()) == {**before, "measurements": ["max_logit"]}
        import torch
        ctx = MeasureContext(tmp_path, lambda x: x * 2, None, {}, None, torch.ones(1, 3, 2, 2), torch.device("cpu"))
        assert MEASUREMENTS.get("max_logit").measure(ctx) == 2.0

        def result(seed, value):
            cell = Cell(f"unet-e-bilinear-s{seed}", "unet", "e", "bilinear", seed, recipe=None)
            m = {"mIoU": 0.5, "params": 1e6, "gflops": 1.0, "checkerboard": 0.1, "checkerboard_stride": 2,
                 "train_img_s": 1.0, "latency_ms": 2.0, "extra": {"max_logit": value}}
            return RunResult(cell, tmp_path / cell.name, m)

        results = [result(0, 3.0), result(1, 5.0)]
        header, rows = results_table(group_runs(results))
        assert header[-1] == "max logit" and rows[0][-1] == "4.0"
        header, rows = runs_table(results, tmp_path)
        assert header[-2] == "max logit" and [r[-2] for r in rows] == ["3.0", "5.0"]
    finally:
        MEASUREMENTS.unregister("max_logit")
    assert _settings(ReportConfig()) == before


def test_progress_line_gives_the_mean_cell_time_and_the_grids_eta():
    from zoo.lab.ablate.grid import Progress
    now = [0.0]
    lines = []
    progress = Progress(5, jobs=2, log=lines.append, clock=lambda: now[0])
    first = progress.start()
    now[0] = 600.0
    progress.finished("unet-r-bilinear-s0", first)
    # 4 cells left at 10 min each, two side by side: 20 min
    assert lines[-1] == "[ablate] 1/5 cells done (unet-r-bilinear-s0); 10 min a cell, ETA 20 min with 2 side by side"
    second = progress.start()
    now[0] = 600.0 + 3 * 3600
    progress.finished("unet-r-fade-s0", second, ok=False)
    # mean (10 min + 3 h) = 1 h 35 min; 3 left, 2 side by side: 1.5 x 95 min
    assert lines[-1] == ("[ablate] 2/5 cells tried (unet-r-fade-s0); 1 h 35 min a cell, "
                         "ETA 2 h 22 min with 2 side by side")
    now[0] += 3600
    progress.finished("a", now[0] - 3600)
    now[0] += 3600
    progress.finished("b", now[0] - 3600)
    now[0] += 3600
    assert progress.finished("c", now[0] - 3600).endswith("ETA 0 min with 2 side by side")


def test_only_trains_a_slice_of_the_grid(tmp_path, monkeypatch):
    from zoo.lab.ablate import grid
    trained = []

    def fake_train(recipe, path, resume):
        trained.append(path.name)
        path.mkdir(parents=True)
        (path / "eval.json").write_text("{}")

    monkeypatch.setattr(grid, "train", fake_train)
    ablation = load_ablation(QUICK, SHORT)
    names = [c.name for c in ablation.cells]
    logged = []
    out = tmp_path / "out"
    assert grid.train_cells(ablation, out, only=[names[1], "*-no_such-*"], log=logged.append) == []
    assert trained == [names[1]]
    assert f"[ablate] --only: 1 of the {len(names)} unfinished cells; the others wait" in logged
    assert any(line.startswith("[ablate] 1/1 cells done") for line in logged)
    # the rest of the grid later, in the same folders: the pilot's cell is not trained again
    grid.train_cells(ablation, out, log=logged.append)
    assert sorted(trained) == sorted(names) and f"skip {names[1]}: finished" in " ".join(logged)
    with pytest.raises(AblationError, match=r"--only fcn\*: no cell of quickstart_upsamplers matches "
                                            r"\(cells are named like unet-test_resnet-"):
        grid.train_cells(ablation, out, only=["fcn*"])


def test_report_only_refuses_the_flags_that_choose_what_trains(capsys):
    with pytest.raises(SystemExit):
        _ablate_cli()([str(QUICK), "--out", "unused", "--report-only", "--only", "unet-*"])
    assert capsys.readouterr().err.strip().endswith("error: --report-only trains nothing: drop --only, --jobs "
                                                    "and --devices (the report covers every finished cell)")
