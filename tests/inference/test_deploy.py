"""Deployment on CPU (zoo/inference/deploy.py, zoo/inference/quantize.py, zoo/lab/deploy_bench.py): exported files
carry their preprocessing, ONNX Runtime runs a model under its own protocol from a cache
keyed by the weights' sha256, int8 only when asked for, and the benchmark table."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import zoo
from tests.conftest import tiny_unet_recipe
from zoo.commands import main as segzoo
from zoo.engine.sources import load_source
from zoo.hub.download import sha256_of
from zoo.inference.deploy import Deployment, OrtModel, deploy_info, read_info
from zoo.inference.predict import Predictor

# Frames of 48x64 that the stored protocol halves (scale 0.5), as the CamVid entries do.
RECIPE = tiny_unet_recipe((48, 64), 6, train={"threads": 1}, eval={"scales": [0.5]})


@pytest.fixture(scope="module")
def run_dir(train_tiny_run):
    return train_tiny_run(RECIPE, "deploy")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Module sources and entries cache under ZOO_HOME: a fresh one per test."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))


def frames(n=3, size=(48, 64)):
    gen = np.random.default_rng(0)
    return [gen.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.train
def test_exported_file_carries_preprocessing_classes_and_named_dims(run_dir, tmp_path, capsys):
    code = segzoo(["export", "--model", str(run_dir), "--formats", "onnx", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().out
    path = tmp_path / "run.onnx"
    info = read_info(path)
    src = load_source(run_dir)
    assert info["classes"] == src.meta["classes"] and len(info["palette"]) == len(info["classes"])
    assert info["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert info["eval_protocol"]["scales"] == [0.5] and info["eval_scales"] == [0.5]
    assert info["model"]["name"] == "unet" and info["format"] == "segzoo-onnx/1"
    assert json.loads((tmp_path / "run.json").read_text()) == info  # the same, beside the file
    model = onnx.load(str(path))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["classes"] == info["classes"] and props["std"] == info["input"]["std"]
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert [dims[0], dims[2], dims[3]] == ["batch", "height", "width"], dims


@pytest.mark.train
def test_predictor_on_onnxruntime_gives_eager_masks_from_a_cache(run_dir, monkeypatch):
    eager = Predictor(run_dir, device="cpu")
    deployed = Predictor(run_dir, device="cpu", backend="onnxruntime", threads=1)
    assert isinstance(deployed.model, OrtModel)
    for frame in frames():
        a, b = eager(frame), deployed(frame)
        assert b.mask.shape == (48, 64)
        assert (a.mask == b.mask).mean() >= 0.999
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
    files = deployed.model.deployment.files
    assert len(files) == 1 and files[0].name.endswith(".fp32.onnx")
    weights = files[0].parent / "model.safetensors"  # beside the weights, named by their sha256
    assert weights.is_file() and sha256_of(weights)[:16] in files[0].name
    import zoo.inference.export
    monkeypatch.setattr(zoo.inference.export, "export_model", lambda *a, **k: pytest.fail("exported again"))
    again = Predictor(run_dir, device="cpu", backend="onnxruntime", threads=1)
    np.testing.assert_array_equal(again(frames()[0]).mask, deployed(frames()[0]).mask)


@pytest.mark.train
def test_int8_is_a_choice_calibrated_on_the_training_split(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # quantizing leaves nothing in the current folder
    with pytest.raises(ValueError, match=r"precision 'int8' runs on ONNX Runtime only: add --backend "
                                         r"onnxruntime"):
        Predictor(run_dir, device="cpu", precision="int8")
    with pytest.raises(ValueError, match=r"^backend 'tensorrt': valid: torch, onnxruntime$"):
        Predictor(run_dir, device="cpu", backend="tensorrt")
    fp32 = Predictor(run_dir, device="cpu", backend="onnxruntime", threads=1)
    int8 = Predictor(run_dir, device="cpu", backend="onnxruntime", precision="int8", threads=1)
    agree = [(fp32(f).mask == int8(f).mask).mean() for f in frames()]
    assert np.mean(agree) > 0.8
    path = int8.model.deployment.files[-1]
    assert path.name.endswith(".int8.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ
    weights = [t for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights"
    assert read_info(path)["precision"] == "int8" and read_info(path)["classes"] == fp32.classes
    assert not [p.name for p in tmp_path.iterdir() if p.suffix in (".onnx", ".data")]


@pytest.mark.train
def test_calibration_frames_are_the_training_split_as_the_model_sees_it(run_dir):
    from zoo.data import make_dataset
    from zoo.inference.quantize import calibration_source
    src = load_source(run_dir)
    inputs = calibration_source(src, run_dir, frames=4)((24, 32))
    train = make_dataset(src.recipe.data, "train", train=False)
    assert len(inputs) == 4 and all(x.shape == (1, 3, 24, 32) for x in inputs)
    first = torch.nn.functional.interpolate(train[0]["image"][None], size=(24, 32), mode="bilinear",
                                            align_corners=False)
    np.testing.assert_allclose(inputs[0], first.numpy(), atol=1e-6)  # scale 0.5 of train frame 0


@pytest.mark.train
def test_calibration_reads_data_only_when_quantizing_and_names_the_option(run_dir, tmp_path):
    import dataclasses

    from zoo.inference.quantize import calibration_source
    src = load_source(run_dir)
    missing = src.recipe.data.model_copy(update={"dataset": "camvid", "root": str(tmp_path / "nowhere")})
    src = dataclasses.replace(src, recipe=src.recipe.model_copy(update={"data": missing}))
    inputs = calibration_source(src, run_dir)  # a cached int8 file needs no data: nothing read yet
    with pytest.raises(FileNotFoundError, match=r"^int8 calibrates on the training split of camvid at "
                                                r".*nowhere, which cannot be read \(.*\); pass --data-root$"):
        inputs((24, 32))


@pytest.mark.train
def test_a_model_without_dynamic_export_runs_at_each_size(tmp_path):
    """PSPNet's pooling to 2, 3 and 6 bins exports at fixed sizes only: one file per size."""
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=3, head_channels=16, aux_channels=8).eval()
    deployment = Deployment(model, deploy_info({"classes": ["a", "b", "c"]}), tmp_path, "psp", threads=1)
    ort = OrtModel(deployment)
    for size in ((64, 64), (96, 64)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ort(x), model(x), atol=1e-3, rtol=1e-3)
    names = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert names == ["psp.fp32.64x64.onnx", "psp.fp32.96x64.onnx"], names
    assert not json.loads((tmp_path / "psp.fp32.json").read_text())["export"]["ok"]  # remembered


@pytest.mark.slow  # two exports, ~20 s on a busy 2-core machine
def test_a_cached_file_from_other_code_is_made_again(tmp_path):
    torch.manual_seed(0)
    old = zoo.create("unet", encoder="test_resnet", num_classes=3, decoder_channels=(8, 8, 8, 8, 8)).eval()
    new = zoo.create("unet", encoder="test_resnet", num_classes=3, decoder_channels=(8, 8, 8, 8, 8)).eval()
    x = torch.randn(1, 3, 64, 64)
    OrtModel(Deployment(old, deploy_info({}), tmp_path, "m", threads=1))(x)
    fresh = OrtModel(Deployment(new, deploy_info({}), tmp_path, "m", threads=1))  # same key, other graph
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), new(x), atol=1e-3, rtol=1e-3)


@pytest.mark.train
def test_eval_command_with_onnxruntime_keeps_the_eager_result(run_dir, capsys):
    assert segzoo(["eval", str(run_dir), "--device", "cpu"]) in (0, None)
    eager = json.loads((run_dir / "eval-val-whole.json").read_text())
    assert segzoo(["eval", str(run_dir), "--backend", "onnxruntime", "--threads", "1"]) in (0, None)
    deployed = json.loads((run_dir / "eval-val-whole-onnxruntime-fp32.json").read_text())
    assert deployed["backend"] == {"backend": "onnxruntime", "precision": "fp32"}
    assert abs(deployed["mIoU"] - eager["mIoU"]) < 0.01
    assert json.loads((run_dir / "eval-val-whole.json").read_text())["mIoU"] == eager["mIoU"]


@pytest.mark.train
def test_benchmark_rows_and_targets(run_dir):
    from zoo.lab.deploy_bench import benchmark_entry, check_targets, format_table
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = check_targets(benchmark_entry(str(run_dir), threads=(1,), max_images=2, timed_frames=2,
                                             rounds=1, log=lambda *_: None))
        assert torch.get_num_threads() == 2  # the caller's count comes back
    finally:
        torch.set_num_threads(before)
    assert [(r["backend"], r["precision"]) for r in rows] == [
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    eager, fp32, int8 = rows
    assert eager["agreement"] == 1.0 and eager["speedup"] == 1.0 and eager["input"] == [24, 32]
    assert fp32["agreement"] >= 0.999 and abs(fp32["mIoU"] - eager["mIoU"]) < 0.01
    assert fp32["met"] == (fp32["speedup"] >= 1.5)
    assert int8["met"] == (int8["speedup"] >= 2.5 and fp32["mIoU"] - int8["mIoU"] <= 0.01)
    assert all(r["p90_ms"] >= r["median_ms"] > 0 for r in rows)
    table = format_table(rows)
    assert table.count("\n") == 4 and "| 24x32 | 1 | onnxruntime int8 |" in table


def test_predict_help_names_a_real_entry_and_unknown_names_get_a_close_one(capsys, tmp_path):
    from zoo.commands import predict
    from zoo.hub.load import ENTRIES
    named = [w for line in predict.__doc__.splitlines() if line.strip().startswith("segzoo predict")
             for w in line.split()[2:3] if "/" not in w]
    assert named and all(w in ENTRIES for w in named), named
    with pytest.raises(SystemExit) as e:
        segzoo(["predict", "unet_resnet18_camvid", str(tmp_path), "--out", str(tmp_path / "p")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unet_resnet18_camvid: ") and "did you mean unet_resnet10t_camvid" in err
