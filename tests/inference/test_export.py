"""Export: ONNX parity under onnxruntime at two sizes, torch.export round trip, readable failures."""
import runpy
from pathlib import Path

import onnx
import onnxruntime as ort  # the [dev] extra installs the exporters
import onnxscript  # noqa: F401  the dynamo-based ONNX exporter needs it
import pytest
import torch
from torch import nn

import zoo
from zoo.inference.export import export_model, format_table, short_reason

SIZES = [(64, 64), (96, 128)]  # export size, second size (both must match eager)
ODD = (97, 131)  # probed: reported as any_size / limit
CONFIGS = {  # small head widths keep the traces short
    "unet-bilinear": ("unet", "bilinear", {"decoder_channels": (16, 8, 8, 8, 8)}),
    "fcn8s-transposed": ("fcn8s", "transposed", {"fc_channels": 16}),
    # One global-pooling bin: adaptive pooling to 2, 3 or 6 bins has no ONNX
    # form for a dynamic input size (the export table in BENCHMARKS.md says so).
    "pspnet-pixelshuffle": ("pspnet", "pixelshuffle",
                            {"head_channels": 16, "aux_channels": 8, "bins": (1,)}),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tracing is single-threaded (tests/conftest.py)


def build(key):
    arch, upsample, args = CONFIGS[key]
    return zoo.create(arch, encoder="test_resnet", upsample=upsample, num_classes=3, **args).eval()


def onnx_max_diff(path, model, size):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, *size)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x)
    assert out.shape == tuple(ref.shape)
    return float((torch.from_numpy(out) - ref).abs().max())


@pytest.mark.train
def test_onnx_parity_at_two_sizes(tmp_path):
    model = build("pspnet-pixelshuffle")
    report = export_model(model, tmp_path, formats=("onnx",), size=SIZES[0], check_size=SIZES[1],
                          odd_size=ODD)
    onnx = report["onnx"]
    assert onnx["ok"], onnx["reason"]
    assert onnx["exporter"] in ("dynamo", "torchscript") and onnx["dynamic"]
    assert onnx["parity"] < 1e-4 and {"64x64", "96x128"} <= set(onnx["max_abs_diff"])
    # odd sizes: either exported too, or the report says why not
    assert onnx["any_size"] or onnx["limit"].startswith("at 97x131: ")
    for size in SIZES:  # checked again here, independently of export_model
        assert onnx_max_diff(onnx["path"], model, size) < 1e-4


@pytest.mark.train
def test_onnx_and_torch_export_round_trip(tmp_path):
    model = build("unet-bilinear")
    report = export_model(model, tmp_path, size=SIZES[0], check_size=SIZES[1], odd_size=ODD,
                          name="unet")
    assert report["onnx"]["ok"] and report["torch_export"]["ok"], format_table(
        [{"arch": "unet", "upsample": "bilinear", **report}])
    for size in SIZES:
        assert onnx_max_diff(tmp_path / "unet.onnx", model, size) < 1e-4
    # ONNX takes any size; torch.export specialises the crop after each x2 step
    # (as for every upsampler that crops), and says so
    assert report["onnx"]["any_size"]
    assert report["torch_export"]["any_size"] or report["torch_export"]["limit"].startswith("at 97x131: ")
    program = torch.export.load(str(tmp_path / "unet.pt2")).module()
    x = torch.randn(3, 3, 96, 64)  # another size and batch 3: nothing was baked in
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # ~90 s each on a busy 2-core machine
@pytest.mark.parametrize("upsample", ["fade", "sapa"])
def test_encoder_guided_upsamplers_export_at_any_size(tmp_path, upsample):
    """Reassembly over in-image neighbours needs no data-dependent branch: ONNX at any
    size; torch.export with dynamic sizes too, odd sizes aside like every head's crop."""
    model = zoo.create("unet", encoder="test_resnet", upsample=upsample, num_classes=3,
                       decoder_channels=(16, 8, 8, 8, 8)).eval()
    report = export_model(model, tmp_path, size=SIZES[0], check_size=SIZES[1], odd_size=ODD,
                          name=upsample)
    assert report["onnx"]["ok"] and report["onnx"]["any_size"], report["onnx"]
    assert report["torch_export"]["ok"] and report["torch_export"]["parity"] < 1e-4
    for size in (*SIZES, ODD):
        assert onnx_max_diff(tmp_path / f"{upsample}.onnx", model, size) < 1e-4


class ToList(nn.Module):
    """Leaves Python: torch.export cannot trace it, TorchScript tracing bakes a constant."""

    def forward(self, x):
        return torch.tensor(x.tolist())


@pytest.mark.train
def test_failing_export_gives_reasons_not_a_crash(tmp_path):
    report = export_model(ToList(), tmp_path, size=(8, 8))
    for fmt in ("onnx", "torch_export"):
        r = report[fmt]
        assert not r["ok"] and r["path"] is None and r["reason"]
        assert "\n" not in r["reason"] and all(len(a) < 400 for a in r["attempts"])
    assert [a.split(":")[0] for a in report["onnx"]["attempts"]] == ["onnx dynamo", "onnx torchscript"]
    assert "non-strict" in report["torch_export"]["attempts"][0]
    assert not (tmp_path / "model.onnx").exists()
    table = format_table([{"arch": "tolist", "upsample": "-", **report}])
    assert table.count("**failed**") == 2


def test_short_reason_and_unknown_format(tmp_path):
    e = RuntimeError("Constraints violated!\n  - You marked L['x'] as dynamic but your code specialized "
                     "it to be a constant (64). If you're using mark_dynamic, either...\n")
    assert short_reason(e) == ("RuntimeError: You marked L['x'] as dynamic but your code specialized "
                               "it to be a constant (64).")
    onnx = RuntimeError("Failed to convert.\n- If there is a missing ONNX function, implement it\n"
                        "<class 'TypeError'>: Unsupported attribute type\n"
                        "<class 'GraphConstructionError'>: Error for operator '::ConvTranspose'. More")
    assert short_reason(onnx) == "RuntimeError: Unsupported attribute type (ONNX operator ::ConvTranspose)"
    assert len(short_reason(ValueError("x" * 1000))) == 240
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(ToList(), tmp_path, formats=("tflite",))


@pytest.mark.train
def test_cli_onnx_parity_fcn8s_transposed(tmp_path, capsys):
    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tools" / "export.py"),
                          run_name="export_cli")["main"]
    torch.manual_seed(0)
    code = main(["--model", "fcn8s", "--encoder", "test_resnet", "--arg", "fc_channels=16",
                 "--arg", "num_classes=3", "--arg", "upsample=transposed", "--formats", "onnx",
                 "--size", "64", "64", "--check-size", "96", "128", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| fcn8s | transposed | ok" in out
    torch.manual_seed(0)  # the same seed builds the same weights
    model = build("fcn8s-transposed")
    for size in SIZES:
        assert onnx_max_diff(tmp_path / "fcn8s.onnx", model, size) < 1e-4


@pytest.mark.slow  # three export attempts, ~90 s on a busy 2-core machine
def test_cli_pspnet_falls_back_to_a_fixed_size_and_says_so(tmp_path, capsys):
    """Adaptive pooling to 2, 3 and 6 bins has no dynamic ONNX form: with the default options
    the file is exported at the fixed --size, with its preprocessing metadata, and a note."""
    from zoo.commands.export import main
    from zoo.inference.deploy import read_info
    code = main(["--model", "pspnet", "--arg", "encoder=test_resnet", "--arg", "head_channels=16",
                 "--arg", "aux_channels=8", "--arg", "num_classes=3", "--formats", "onnx",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("note: pspnet/bilinear onnx exported at the fixed size 64x64 (as --static does): dynamic "
            "height and width failed; --size H W exports another size") in out
    assert "GatherND" in out or "adaptive_avg_pool2d" in out  # why, from the dynamic attempts
    model = onnx.load(str(tmp_path / "pspnet.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert read_info(tmp_path / "pspnet.onnx")["size"] == [64, 64]


def test_the_grid_takes_the_command_lines_options(tmp_path):
    """`segzoo export --all --static --arg num_classes=3 ...` reaches every export of the grid."""
    from zoo.inference.export import export_grid
    rows = export_grid(tmp_path, archs=["fcn32s"], upsamplers=["bilinear"], formats=["onnx"], log=lambda _: None,
                       model_args={"num_classes": 3, "fc_channels": 16}, dynamic=False, atol=1e-3)
    assert rows[0]["onnx"]["ok"] and rows[0]["onnx"]["dynamic"] is False
    shape = onnx.load(rows[0]["onnx"]["path"]).graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in shape.dim] == [1, 3, 64, 64]
