"""`train.ema_decay`: the average's arithmetic, a run that scores and ships it while its training
weights follow the same path as without it, and an exact resume of both."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zoo.engine import trainer as T
from zoo.engine.ema import ema_state, make_ema, warmed_decay
from zoo.engine.recipe import RecipeError
from zoo.hub import formats as ckpt

from .test_resume import crash_at, recipe, weights


def test_the_warm_up_caps_the_decay_early_and_lets_it_reach_its_value():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)        # (1 + 0) / (10 + 0)
    assert warmed_decay(0.999, 90) == pytest.approx(0.91)      # 91 / 100
    assert warmed_decay(0.9, 90) == 0.9                        # the decay itself once below the ramp
    assert warmed_decay(0.999, 10 ** 6) == 0.999


def test_the_average_follows_the_formula_parameters_and_buffers_alike():
    model = nn.BatchNorm1d(2)
    ema = make_ema(model, 0.5)
    assert torch.equal(ema.module.weight, model.weight)  # a copy until the first update
    expected_w, expected_mean = model.weight.detach().clone(), model.running_mean.clone()
    for t, value in enumerate([1.0, 3.0, -2.0]):
        with torch.no_grad():
            model.weight.fill_(value)
            model.running_mean.fill_(10 * value)
            model.num_batches_tracked.fill_(t + 7)
        ema.update_parameters(model)
        d = warmed_decay(0.5, t)  # 0.1, 2/11, 0.25: the ramp, then 0.5 once it is above
        expected_w = d * expected_w + (1 - d) * value
        expected_mean = d * expected_mean + (1 - d) * 10 * value
    assert torch.allclose(ema.module.weight, expected_w)
    assert torch.allclose(ema.module.running_mean, expected_mean)
    assert int(ema.module.num_batches_tracked) == 9  # a counter is copied, not averaged
    assert ema_state(model, ema)["updates"] == 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 4-iteration run, without and with the average."""
    root = tmp_path_factory.mktemp("ema")
    T.train(recipe(4), root / "plain")
    T.train(recipe(4, ema_decay=0.9), root / "ema")
    return root


@pytest.mark.train
def test_a_run_ships_the_average_and_trains_as_it_would_without_it(pair):
    plain, ema = weights(pair / "plain"), weights(pair / "ema")
    state = ckpt.load_train_state(ckpt.resolve(pair / "ema" / "checkpoints", "last"))["ema"]
    assert state["updates"] == 4
    training = state["weights"]
    # the training weights are those of the run without the average, to the bit
    assert all(torch.equal(plain[k], training[k].cpu()) for k in plain)
    # the checkpoint's model weights are the average: not the training weights
    assert max((ema[k].float() - plain[k].float()).abs().max().item() for k in plain) > 1e-4
    result = json.loads((pair / "ema" / "eval.json").read_text())
    reference = json.loads((pair / "plain" / "eval.json").read_text())
    assert result["without_ema"]["mIoU"] == reference["mIoU"]
    assert result["without_ema"]["per_class_iou"] == reference["per_class_iou"]
    assert "without_ema" not in reference


@pytest.mark.train
def test_a_killed_run_resumes_both_weights_to_the_bit(pair, tmp_path, monkeypatch):
    run = tmp_path / "run"
    crash_at(monkeypatch, 4)  # the last checkpoint is iteration 2
    with pytest.raises(RuntimeError, match="power cut"):
        T.train(recipe(4, ema_decay=0.9), run)
    monkeypatch.undo()
    T.train(recipe(4, ema_decay=0.9), run)
    straight = pair / "ema" / "checkpoints"
    a, b = weights(pair / "ema"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = ckpt.load_train_state(ckpt.resolve(straight, "last"))["ema"]
    sb = ckpt.load_train_state(ckpt.resolve(run / "checkpoints", "last"))["ema"]
    assert sa["updates"] == sb["updates"] == 4
    assert all(torch.equal(sa["weights"][k], sb["weights"][k]) for k in sa["weights"])


@pytest.mark.train
@pytest.mark.parametrize("before, after", [(None, 0.9), (0.9, 0.99), (0.9, None)])
def test_switching_the_average_on_a_resumed_run_is_refused(pair, tmp_path, before, after):
    run = tmp_path / "run"
    shutil.copytree(pair / ("plain" if before is None else "ema"), run)
    extra = {} if after is None else {"ema_decay": after}
    with pytest.raises(RecipeError, match=rf"train.ema_decay changed {before or 'unset'} -> {after or 'unset'} "
                                          r"since the run in .* began"):
        T.Trainer(recipe(6, **extra), run)


def test_the_decay_must_lie_strictly_between_0_and_1():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(RecipeError, match="train.ema_decay"):
            recipe(4, ema_decay=bad)


@pytest.mark.train
def test_the_checkpoint_keeps_both_weights_as_safetensors(pair):
    folder = ckpt.resolve(pair / "ema" / "checkpoints", "last")
    tensors = load_file(str(folder / "state.safetensors"))
    assert any("weights" in name for name in tensors)  # the training weights, no pickle
