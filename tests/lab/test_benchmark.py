"""Benchmark rows, JSON shape, the smp counterparts, step timing and machine facts, on tiny
models (no timing assertions)."""
import json
import runpy
from pathlib import Path

import pytest
import torch

from zoo.common import machine
from zoo.lab import bench, counterparts, timing
from zoo.lab.bench import BenchSpec

TOOLS = Path(__file__).resolve().parents[2] / "tools"
TINY_UNET = {"decoder_channels": (16, 8, 8, 8, 8)}


def spec(arch="unet", upsample="nearest", **kw):
    args = {"unet": TINY_UNET, "pspnet": {"head_channels": 16, "aux_channels": 8},
            "fcn8s": {"fc_channels": 16}}[arch]
    return BenchSpec(arch, "test_resnet", upsample, size=(64, 64), batch=2, num_classes=3,
                     model_args=args, **kw)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine
    every parallel region waits for both to be scheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli_rows(tmp_path_factory, one_thread):
    """One CLI run: unet with smp beside it, and fcn8s (no smp counterpart)."""
    path = tmp_path_factory.mktemp("bench") / "rows.json"
    main = runpy.run_path(str(TOOLS / "benchmark.py"), run_name="benchmark_cli")["main"]
    main(["--arch", "unet", "fcn8s", "--encoder", "test_resnet", "--upsample", "nearest",
          "--size", "64", "64", "--batch", "2", "--iters", "2", "--warmup", "1", "--rounds", "2",
          "--num-classes", "3", "--arg", "decoder_channels=[16,8,8,8,8]", "--arg", "fc_channels=16",
          "--threads", "1", "--against", "smp", "--json", str(path)])
    return json.loads(path.read_text())


@pytest.mark.train
def test_json_shape_and_row_keys(cli_rows):
    assert set(cli_rows) == {"meta", "rows"}
    assert cli_rows["meta"]["torch"] == torch.__version__
    rows = cli_rows["rows"]
    assert [(r["impl"], r["arch"]) for r in rows] == [("zoo", "unet"), ("smp", "unet"), ("zoo", "fcn8s")]
    for r in rows:
        assert set(bench.ROW_KEYS) <= set(r)
        assert r["size"] == [64, 64] and r["batch"] == 2 and r["device"] == "cpu"
        assert r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["gflops"] > 0
        assert r["train_ms_p25"] <= r["train_ms"] <= r["train_ms_p75"]
        assert r["train_steps"] == r["infer_steps"] == 2
        assert r["mfu_train"] is None  # CPU: no peak to divide by
        assert r["peak_mem_mb"] is None or r["peak_mem_mb"] >= 0
    smp_row = rows[1]
    assert smp_row["comparable"] is True
    assert smp_row["train_time_ratio"] == pytest.approx(rows[0]["train_ms"] / smp_row["train_ms"])
    assert "no smp row" in rows[2]["note"]


def test_smp_unet_matches_widths_encoder_and_interpolation():
    import segmentation_models_pytorch as smp
    s = spec("unet", "bilinear")
    ours = bench.build_zoo(s)
    theirs, comparable, note = counterparts.build_smp(s, ours)
    assert isinstance(theirs, smp.Unet) and comparable
    assert [b.conv2[0].out_channels for b in theirs.decoder.blocks] == list(TINY_UNET["decoder_channels"])
    assert {b.interpolation_mode for b in theirs.decoder.blocks} == {"bilinear"}
    assert theirs.encoder.out_channels[1:] == ours.encoder.channels  # the same timm encoder
    x = torch.randn(1, 3, 64, 64)
    assert theirs.eval()(x).shape == ours.eval()(x).shape == (1, 3, 64, 64)
    assert "tu-test_resnet" in note
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


def test_smp_counterparts_flag_what_differs():
    s = spec("unet", "transposed")
    _, comparable, note = counterparts.build_smp(s, bench.build_zoo(s))
    assert not comparable and "cannot transposed" in note
    s = spec("pspnet", "bilinear")
    psp, comparable, _ = counterparts.build_smp(s, bench.build_zoo(s))
    assert not comparable
    assert psp.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(LookupError, match="no counterpart of fcn8s"):
        counterparts.build_smp(spec("fcn8s"), None)


def test_smp_encoder_names():
    assert counterparts.smp_encoder_name("resnet18") == "resnet18"
    assert counterparts.smp_encoder_name("test_resnet") == "tu-test_resnet"


def test_grid_gives_each_arch_its_args_and_refuses_unused():
    specs = bench.grid(["unet", "fcn8s"], ["test_resnet"], ["nearest", "bilinear"],
                       {"fc_channels": 16, "decoder_channels": [8] * 5}, size=(64, 64))
    assert [(s.arch, s.upsample) for s in specs] == [("unet", "nearest"), ("unet", "bilinear"),
                                                      ("fcn8s", "nearest"), ("fcn8s", "bilinear")]
    assert specs[0].model_args == {"decoder_channels": [8] * 5}
    assert specs[2].model_args == {"fc_channels": 16}
    with pytest.raises(ValueError, match="takes fc_channels"):
        bench.grid(["unet"], ["test_resnet"], ["nearest"], {"fc_channels": 8})


def test_parse_model_args_reads_yaml_values():
    assert bench.parse_model_args(["decoder_channels=[64,32]", "head_channels=16", "upsample=nearest"]) == {
        "decoder_channels": [64, 32], "head_channels": 16, "upsample": "nearest"}


def test_summary_and_peak_table():
    s = timing.summarize([0.5, 0.1, 0.2, 0.3, 0.4], batch=4)
    assert s["ms"] == pytest.approx(300) and s["img_s"] == pytest.approx(4 / 0.3)
    assert s["ms_p25"] == pytest.approx(200) and s["ms_p75"] == pytest.approx(400)
    assert machine.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989
    assert machine.peak_bf16_tflops("NVIDIA H100 PCIe") == 756
    assert machine.peak_bf16_tflops("NVIDIA H200") == 989
    assert machine.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert machine.peak_bf16_tflops("Some GPU") is None


def test_spec_validation():
    with pytest.raises(ValueError, match="needs CUDA"):
        spec(amp="fp16")
    with pytest.raises(ValueError, match="amp must be"):
        spec(amp="fp8")
    assert spec(amp="bf16", channels_last=True).eager_fp32().amp == "off"


@pytest.mark.train
def test_iters_is_the_number_of_timed_steps_whatever_the_rounds():
    rows = bench.benchmark(spec(), iters=3, warmup=0, rounds=2, log=lambda _: None)
    assert rows[0]["train_steps"] == rows[0]["infer_steps"] == 3  # 2 + 1, not 2 a round
    with pytest.raises(ValueError, match=r"--rounds 4: models take turns 1 to --iters \(3\) times"):
        bench.benchmark(spec(), iters=3, rounds=4)


@pytest.mark.train
def test_aux_head_is_trained_when_weighted():
    s = spec("pspnet", "bilinear", aux_weight=0.4)
    model = bench.build_zoo(s)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    runner = bench.Runner(model, s, x, y, aux=True)
    runner.optimizer.zero_grad()
    before = model.aux_head.layers[-1].weight.clone()
    runner.train_step()
    assert not torch.equal(before, model.aux_head.layers[-1].weight)
    s = spec("unet", "bilinear", aux_weight=0.4)  # no auxiliary head: the main loss alone, no crash
    runner = bench.Runner(bench.build_zoo(s), s, x, y, aux=True)
    runner.train_step()


@pytest.mark.train
def test_unet_breakdown_parts():
    """scripts/unet_breakdown.py: the one-off part-by-part comparison, outside the package."""
    script = runpy.run_path(str(TOOLS.parent / "scripts" / "unet_breakdown.py"), run_name="breakdown")
    s = spec("unet", "nearest")
    s.size = (32, 32)
    rows = script["unet_breakdown"](s, iters=1)
    parts = [r["part"] for r in rows]
    assert parts[0] == "encoder" and parts[-1] == "classifier"
    assert "stage 4" in parts and "stage 4 upsampler" in parts
    for r in rows:
        assert r["zoo_ms"] > 0 and r["zoo_gflops"] >= 0
        assert ("smp_ms" in r) == (not r["part"].endswith("upsampler"))
    assert "| stage 0 |" in script["format_breakdown"](rows)


# ----------------------------------------------------------------------------- upsampler cost

@pytest.fixture(scope="module")
def cost_report(tmp_path_factory, one_thread):
    """`segzoo benchmark --upsamplers` on a tiny U-Net: bilinear (added as the baseline),
    two content-aware upsamplers and one that cannot be built (test_resnet's only max-pool
    is its stem)."""
    path = tmp_path_factory.mktemp("cost") / "cost.json"
    main = runpy.run_path(str(TOOLS / "benchmark.py"), run_name="benchmark_cli")["main"]
    main(["--upsamplers", "--upsample", "carafe", "unpool", "sapa", "--arch", "unet",
          "--encoder", "test_resnet", "--size", "64", "64", "--batch", "2", "--iters", "2",
          "--warmup", "1", "--num-classes", "3", "--arg", "decoder_channels=[16,8,8,8,8]",
          "--threads", "1", "--json", str(path)])
    return json.loads(path.read_text())


@pytest.mark.train
def test_upsampler_cost_rows_columns_and_ratios(cost_report, capsys):
    from zoo.lab.upsampler_cost import format_table
    rows = {r["upsample"]: r for r in cost_report["rows"]}
    assert list(rows) == ["bilinear", "carafe", "unpool", "sapa"]
    assert cost_report["meta"]["baseline"] == "bilinear" and "profiler" in cost_report["meta"]["memory"]
    base = rows["bilinear"]
    assert base["train_x"] == base["infer_x"] == base["peak_x"] == 1.0
    assert base["train_cpu_x"] == base["infer_cpu_x"] == 1.0
    assert base["upsampler_params_m"] == 0  # U-Net's resize keeps the channels: no projection
    for name in ("carafe", "sapa"):
        r = rows[name]
        assert r["steps"] == 2 and r["train_ms"] > 0 and r["infer_ms"] > 0 and r["peak_mem_mb"] > 0
        assert r["train_x"] == pytest.approx(r["train_ms"] / base["train_ms"])
        assert r["train_cpu_x"] == pytest.approx(r["train_cpu_ms"] / base["train_cpu_ms"])
        assert r["peak_x"] == pytest.approx(r["peak_mem_mb"] / base["peak_mem_mb"])
        assert r["params_m"] - base["params_m"] == pytest.approx(r["upsampler_params_m"], abs=0.02)
        assert r["gflops"] > base["gflops"]  # CARAFE's kernel encoder, SAPA's projections
    assert "max-pool switches" in rows["unpool"]["error"] and "train_ms" not in rows["unpool"]
    table = format_table(cost_report).splitlines()
    assert table[0].count("|") == 13 and len(table) == 2 + 4
    assert table[2].startswith("| bilinear | ") and "| 1.00 | " in table[2]
    assert table[4].startswith("| unpool | not built: ")
    assert "upsample='guided_unpool'" in table[4]  # the refusal's advice is in the table, not cut off


@pytest.mark.train
def test_upsampler_cost_covers_the_registry(monkeypatch):
    import decoders
    from zoo.lab import upsampler_cost
    assert upsampler_cost.registered_upsamplers() == list(decoders.UPSAMPLERS)
    monkeypatch.setattr(upsampler_cost, "registered_upsamplers", lambda: ["nearest"])
    report = upsampler_cost.measure("unet", "test_resnet", (32, 32), 2, num_classes=3, iters=1,
                                    model_args={"decoder_channels": [8] * 5}, log=lambda line: None)
    assert [r["upsample"] for r in report["rows"]] == ["bilinear", "nearest"]


def test_step_peak_is_the_highest_total_allocated_during_the_step():
    from zoo.lab.upsampler_cost import step_peak_bytes

    class Step:
        device = torch.device("cpu")

        def train_step(self):
            a = torch.empty(2**20, dtype=torch.uint8)   # 1 MiB
            b = torch.empty(2**21, dtype=torch.uint8)   # + 2 MiB: the peak, 3 MiB
            del a, b
            torch.empty(2**21, dtype=torch.uint8)       # 2 MiB after both were freed

    assert step_peak_bytes(Step()) == 3 * 2**20


def test_upsampler_cost_refuses_unknown_names_in_one_line(capsys):
    main = runpy.run_path(str(TOOLS / "benchmark.py"), run_name="benchmark_cli")["main"]
    with pytest.raises(SystemExit, match=r"^error: unknown upsampler 'carafee'; did you mean carafe"):
        main(["--upsamplers", "--upsample", "carafee", "--encoder", "test_resnet"])
    with pytest.raises(SystemExit, match=r"^error: .*unetx"):
        main(["--upsamplers", "--arch", "unetx", "--encoder", "test_resnet"])


@pytest.mark.parametrize("argv, message", [
    (["--upsamplers", "--amp", "bf16", "--channels-last", "--rounds", "3"],
     "--upsamplers does not take --amp, --channels-last, --rounds"),
    (["--deploy", "all", "--device", "cuda", "--arch", "pspnet", "--threads", "2"],
     "--deploy does not take --arch, --device, --threads"),
])
def test_modes_refuse_the_flags_they_would_drop(capsys, argv, message):
    from zoo.commands.benchmark import parse
    with pytest.raises(SystemExit):
        parse(argv)
    assert capsys.readouterr().err.strip().endswith(f"error: {message}")
    assert parse(["--upsamplers", "--iters", "2", "--device", "cpu"]).upsamplers  # what it takes passes


def test_timing_and_memory_sampler():
    calls = []
    times = timing.time_steps(lambda: calls.append(1), 3)
    assert len(times) == 3 == len(calls) and all(t >= 0 for t in times)
    assert timing.median_ms(lambda: calls.append(1), runs=2, warmup=1) >= 0 and len(calls) == 6
    if timing.rss_bytes() is not None:
        with timing.RssPeak() as mem:
            block = bytearray(64 * 2**20)
            block[::4096] = b"x" * len(block[::4096])
        assert mem.peak - mem.base >= 32 * 2**20


def test_one_description_of_the_machine():
    info = machine.machine_info()
    assert {"date", "command", "python", "torch", "cpu", "cpu_count", "threads"} <= set(info)
    cpu_only = {**info, "gpu": None}
    assert machine.describe(cpu_only) == f"{info['cpu']}, {info['cpu_count']} cores; torch {info['torch']}"
    gpu = {**cpu_only, "gpu": "NVIDIA H200", "gpu_count": 2}
    assert machine.describe(gpu, threads=True).endswith(f", 2 x NVIDIA H200; torch {info['torch']}, "
                                                        f"{info['threads']} torch thread(s)")
    assert "H200" not in machine.describe(gpu, gpu=False)
