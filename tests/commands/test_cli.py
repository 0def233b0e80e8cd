"""One-line errors from the command lines (`zoo.commands.errors.run`), in-process: a device
the machine lacks, errors raised in DataLoader workers, damaged checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.commands.errors import run
from zoo.data.base import DataError


def _error_line(capsys, fn, *args, **kwargs) -> str:
    with pytest.raises(SystemExit) as info:
        run(fn, *args, **kwargs)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it(tmp_path, capsys):
    from zoo.engine.trainer import train_from_files
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: unet, encoder: test_resnet, encoder_weights: null}\n")
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    line = _error_line(capsys, train_from_files, recipe, ["train.device=cuda"], run_dir=tmp_path / "run")
    assert line == (f"error: train.device=cuda: CUDA is not available on this machine "
                    f"(torch {torch.__version__}, {built}); use train.device=cpu or auto")
    from zoo.engine.distributed import device_for
    with pytest.raises(ValueError, match=r"^--device cuda:1: CUDA is not available .*; use --device cpu or auto$"):
        device_for("cuda:1", what="--device")


class _Broken(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        if i == 1:
            raise DataError("cannot read image file /data/img1.png (missing, corrupt or not an image)")
        return np.zeros(1)


class _Buggy(_Broken):
    def __getitem__(self, i):
        return 1 / 0


def _first_batches(dataset, workers):
    return list(DataLoader(dataset, batch_size=1, num_workers=workers))


def test_worker_errors_print_as_in_process_ones(capsys):
    in_process = _error_line(capsys, _first_batches, _Broken(), 0)
    in_worker = _error_line(capsys, _first_batches, _Broken(), 1)
    assert in_process == in_worker == \
        "error: cannot read image file /data/img1.png (missing, corrupt or not an image)"


def test_a_bug_in_a_worker_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError, match="DataLoader worker"):
        run(_first_batches, _Buggy(), 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from zoo.engine.recipe import recipe_from_dict
    from zoo.engine.trainer import train
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    train(recipe_from_dict({
        "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
                  "decoder_channels": [16, 16, 8, 8, 8]},
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 4, "size": 32}},
        "train": {"iters": 2, "checkpoint_interval": 2}, "eval": {"interval": 2, "max_images": 1},
        "log": {"num_images": 0}}), run_dir)
    return run_dir


@pytest.mark.train
@pytest.mark.parametrize("tool", ["eval", "predict"])
def test_truncated_weights_are_named_by_eval_and_predict(trained, tmp_path, capsys, tool):
    import shutil

    from zoo.hub import formats as ckpt
    from zoo.inference.predict import predict_files
    from zoo.inference.score import evaluate_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    weights = ckpt.resolve(run_dir / "checkpoints", "best") / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    if tool == "eval":
        line = _error_line(capsys, evaluate_run, run_dir, device="cpu")
    else:
        image = tmp_path / "x.png"
        from PIL import Image
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
        line = _error_line(capsys, predict_files, run_dir, [image], tmp_path / "out", device="cpu")
    assert line == (f"error: {weights}: truncated or corrupt safetensors file "
                    "(incomplete metadata, file not fully covered)")


def _imagenet_recipe(tmp_path):
    recipe = tmp_path / "real.yaml"
    recipe.write_text("model: {name: unet, encoder: test_resnet, encoder_weights: imagenet}\n"
                      "data: {dataset: synthetic, num_workers: 0, options: {num_images: 2, size: 32}}\n")
    return recipe


@pytest.mark.parametrize("setting", ["HF_HUB_OFFLINE", "ZOO_OFFLINE", "unreachable"])
def test_real_recipe_without_network_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, setting):
    """No ~50 s of download retries and no traceback: one line naming the override, in seconds."""
    import socket
    import time

    from huggingface_hub import constants

    from zoo.engine.trainer import train_from_files
    monkeypatch.setattr("zoo.models.encoders._cached_in_hub", lambda name: False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    if setting == "HF_HUB_OFFLINE":  # huggingface_hub reads the variable once, at import
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    elif setting == "ZOO_OFFLINE":
        monkeypatch.setenv("ZOO_OFFLINE", "yes")
    import albumentations  # noqa: F401  (import time is not what is measured)
    import timm  # noqa: F401
    start = time.perf_counter()
    line = _error_line(capsys, train_from_files, _imagenet_recipe(tmp_path), [], run_dir=tmp_path / "run")
    assert time.perf_counter() - start < 5
    assert line.startswith("error: encoder_weights='imagenet' for 'test_resnet' ")
    assert line.endswith("pass model.encoder_weights=null in a recipe (encoder_weights=None in Python) "
                         "or a local .safetensors file")
    expected = {"HF_HUB_OFFLINE": "offline mode is set (HF_HUB_OFFLINE=1)",
                "ZOO_OFFLINE": "offline mode is set (ZOO_OFFLINE=yes)",
                "unreachable": f"the hub cannot be reached (127.0.0.1:{port}: "}[setting]
    assert expected in line
