"""What a checkpoint says about repeating its run (meta.json `determinism`), and
`train.threads` applied and reported."""
from __future__ import annotations

import warnings

import pytest
import torch

from zoo.engine import trainer as T
from zoo.engine.recipe import recipe_from_dict
from zoo.engine.reproduce import determinism_record, watch_nondeterministic
from zoo.hub import formats as ckpt


def _recipe(**train):
    return recipe_from_dict({
        "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
                  "decoder_channels": [16, 16, 8, 8, 8]},
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 4, "size": 32}},
        "train": {"iters": 2, "checkpoint_interval": 2, "log_interval": 1, **train},
        "eval": {"interval": 2, "max_images": 1}, "log": {"num_images": 0}})


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.train
def test_threads_are_set_and_said_and_recorded(tmp_path, capsys, restore_threads):
    torch.set_num_threads(2)
    T.train(_recipe(threads=1, deterministic=True), tmp_path / "run")
    assert torch.get_num_threads() == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("SyntheticScenes: 4 train / 4 val images; model unet (0.4M parameters); device cpu; "
                     "threads 1; amp off; processes 1; loader workers 0")
    meta = ckpt.load_meta(ckpt.resolve(tmp_path / "run" / "checkpoints"))
    assert meta["determinism"] == {
        "device": "cpu", "torch": torch.__version__, "deterministic": True, "threads": 1, "processes": 1,
        "nondeterministic_ops": [],
        "guarantee": f"bit-identical weights when repeated or resumed with torch {torch.__version__} "
                     "on cpu with 1 thread, 1 process"}


@pytest.mark.train
def test_an_operation_without_a_deterministic_kernel_is_recorded(tmp_path, capsys, monkeypatch):
    """On CUDA, bilinear-upsampling backward warns like this; here the loss does."""
    real = T.build_criterion
    message = ("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but "
               "you set 'torch.use_deterministic_algorithms(True, warn_only=True)'. ...")

    def warning_loss(recipe_, dataset, device):
        loss = real(recipe_, dataset, device)

        def forward(*args, **kwargs):
            warnings.warn(message, UserWarning)
            return loss(*args, **kwargs)
        return forward
    monkeypatch.setattr(T, "build_criterion", warning_loss)
    T.train(_recipe(deterministic=True), tmp_path / "run")
    out = capsys.readouterr().out
    assert ("warning: train.deterministic=true, but on cpu upsample_bilinear2d_backward_out_cuda has no "
            "deterministic implementation: weights will not be bit-identical between runs") in out
    record = ckpt.load_meta(ckpt.resolve(tmp_path / "run" / "checkpoints"))["determinism"]
    assert record["nondeterministic_ops"] == ["upsample_bilinear2d_backward_out_cuda"]
    assert record["guarantee"] == (
        "same sample order and augmentations only: upsample_bilinear2d_backward_out_cuda has no "
        "deterministic implementation on cpu, so weights differ between runs in the last bits")


def test_without_deterministic_mode_only_the_data_stream_is_promised():
    record = determinism_record(torch.device("cpu"), False, threads=4, processes=2)
    assert record["guarantee"] == ("same sample order and augmentations only: train.deterministic is off, "
                                   "so weights differ between runs")
    assert (record["threads"], record["processes"], record["deterministic"]) == (4, 2, False)


def test_watch_lets_other_warnings_through():
    found = set()
    with pytest.warns(DeprecationWarning, match="old API"):
        with watch_nondeterministic(found):
            warnings.warn("scatter_add_cuda_kernel does not have a deterministic implementation", UserWarning)
            warnings.warn("old API", DeprecationWarning)
    assert found == {"scatter_add_cuda_kernel"}
