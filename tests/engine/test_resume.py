"""Resuming a run: under a changed recipe, after a better best, from a damaged
newest checkpoint, and with metrics.jsonl kept free of repeated rows.
Runs in-process on the synthetic scenes (a few seconds each)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.engine import trainer as T
from zoo.engine.recipe import RecipeError, recipe_from_dict
from zoo.hub import formats as ckpt

pytestmark = pytest.mark.train  # every test resumes a run the module trains

TINY_MODEL = {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
              "decoder_channels": [16, 16, 8, 8, 8]}


def recipe(iters=4, *, eval_interval=None, **train):
    return recipe_from_dict({
        "model": dict(TINY_MODEL),
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 8, "size": 32}},
        "train": {"iters": iters, "seed": 1, "lr": 0.02, "log_interval": 1, "checkpoint_interval": 2,
                  "deterministic": True, **train},
        "eval": {"interval": eval_interval or iters, "max_images": 2},
        "log": {"num_images": 0},
    })


def weights(run: Path, pointer="last") -> dict:
    return load_file(str(ckpt.resolve(run / "checkpoints", pointer) / "model.safetensors"))


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained once for the module: a 4-iteration run, and a 6-iteration one."""
    root = tmp_path_factory.mktemp("runs")
    T.train(recipe(4), root / "four")
    T.train(recipe(6), root / "six")
    return root


def copy_of(runs: Path, name: str, tmp_path: Path) -> Path:
    shutil.copytree(runs / name, tmp_path / "run")
    return tmp_path / "run"


def test_longer_run_follows_the_new_schedule(runs, tmp_path, capsys):
    run = copy_of(runs, "four", tmp_path)
    before = weights(run)
    assert rows(run)[3]["lr"] == 0.0  # poly over 4 iterations ends at lr 0
    capsys.readouterr()
    T.train(recipe(8), run)
    out = capsys.readouterr().out
    assert "train.iters changed 4 -> 8: the schedule now runs to 8" in out
    after = weights(run)
    assert max((after[k].float() - before[k].float()).abs().max().item() for k in before) > 1e-3
    train_rows = {r["iter"]: r["lr"] for r in rows(run) if "lr" in r}
    # lr logged after iteration k is the one for the next step: 0.02 * (1 - k / 8) ** 0.9
    for k in (5, 6, 7):
        assert train_rows[k] == pytest.approx(0.02 * (1 - k / 8) ** 0.9, rel=1e-12)
    assert json.loads((run / "eval.json").read_text())["iteration"] == 8


@pytest.mark.parametrize("override, message", [
    ({"schedule": "cosine"}, "train.schedule changed poly -> cosine since the checkpoint"),
    ({"warmup_iters": 1}, "train.warmup_iters changed 0 -> 1 since the checkpoint"),
    ({"lr": 0.05}, "train.lr changed [0.02, 0.02, 0.02, 0.02] -> [0.05, 0.05, 0.05, 0.05]"),
    ({"weight_decay": 0.01}, "train.weight_decay changed 0.0001 -> 0.01 since the checkpoint"),
    ({"optimizer": "adamw"}, "train.optimizer=adamw does not match the optimizer state saved in"),
    ({"iters": 3}, "train.iters (3) is below the iteration the run in"),
])
def test_changes_a_resumed_run_cannot_follow_are_refused(runs, tmp_path, override, message):
    run = copy_of(runs, "four", tmp_path)
    with pytest.raises(RecipeError) as info:
        T.Trainer(recipe(**{"iters": 8, **override}), run)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_run_resumed_under_fp16_starts_its_loss_scale_afresh(runs, tmp_path):
    """A checkpoint written without fp16 stores no loss scale; the fp16 scaler (CUDA's, a CPU
    one here) starts afresh and says so, where torch's own error named no key or file."""
    from zoo.engine.resume import restore
    run = copy_of(runs, "four", tmp_path)
    trainer = T.Trainer(recipe(8), run)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    r = restore(trainer.ckpt_dir, model=trainer.model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                scaler=scaler, recipe=trainer.recipe, device=trainer.device)
    assert r.iteration == 4 and scaler.get_scale() == 65536.0
    assert any(n.startswith("train.amp is fp16 now, not when ") and n.endswith("the loss scale starts afresh")
               for n in r.notes)


@pytest.mark.parametrize("section, key, value, message", [
    ("model", "upsample", "pixelshuffle", "model.upsample changed unset -> pixelshuffle since the run in"),
    ("model", "decoder_channels", [8, 8, 8, 8, 8],
     "model.decoder_channels changed [16, 16, 8, 8, 8] -> [8, 8, 8, 8, 8] since the run in"),
    ("data", "options", {"num_images": 8, "size": 40}, "data.options.size changed 32 -> 40 since the run in"),
    ("data", "mean", [0.5, 0.5, 0.5], "data.mean changed [0.485, 0.456, 0.406] -> [0.5, 0.5, 0.5]"),
    ("train", "loss", "ce+lovasz", "train.loss changed ce -> ce+lovasz since the run in"),
])
def test_changes_to_what_the_weights_are_refused_before_anything_is_built(runs, tmp_path, monkeypatch,
                                                                          section, key, value, message):
    """Issue 22, item 6: resuming a bilinear run with model.upsample=pixelshuffle ended in a
    30-line size-mismatch traceback."""
    run = copy_of(runs, "four", tmp_path)
    changed = recipe(8).model_dump()
    changed[section][key] = value
    monkeypatch.setattr(T, "make_dataset", lambda *a, **k: pytest.fail("built the data set"))
    with pytest.raises(RecipeError) as info:
        T.Trainer(recipe_from_dict(changed), run)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert f"({run / 'recipe.yaml'}): a resumed run cannot follow that; set it back, or train into a new " \
           "run folder (--name, --run-dir or --fresh)" in text
    monkeypatch.undo()
    T.Trainer(recipe_from_dict(changed), tmp_path / "new").release()  # a new folder takes it


def test_other_classes_are_refused_before_the_model_is_built(runs, tmp_path, monkeypatch):
    run = copy_of(runs, "four", tmp_path)
    meta_file = ckpt.resolve(run / "checkpoints", "last") / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "classes": ["sky", "road"]}))
    monkeypatch.setattr(T, "build_model", lambda *a: pytest.fail("built the model"))
    with pytest.raises(RecipeError, match=r"the data set's classes changed since the checkpoint .*: 2 "
                                          r"\(sky, road, ...\) -> \d+ \(.*\); point data at the run's"):
        T.Trainer(recipe(8), run)


def test_best_is_restored_from_its_pointer(tmp_path):
    """A best saved after `last` (eval and checkpoint intervals differ) must not
    be replaced by a worse evaluation after resuming from `last`."""
    run = tmp_path / "run"
    T.train(recipe(4, checkpoint_interval=4), run)
    ckpts = run / "checkpoints"
    best = ckpt.read_pointer(ckpts, "best")
    best_weights = weights(run, "best")
    ckpt.set_pointer(ckpts, "best", ckpts / best["checkpoint"], iteration=best["iteration"], mIoU=0.99)
    state_json = ckpt.resolve(ckpts, "last") / "state.json"  # the state saved with `last` knew a lower best
    state = json.loads(state_json.read_text())
    state["__dict__"]['"best_miou"'] = -1.0
    state_json.write_text(json.dumps(state))

    result = T.train(recipe(6, eval_interval=2, checkpoint_interval=4), run)
    assert result["best_mIoU"] == 0.99
    assert ckpt.read_pointer(ckpts, "best") == {**best, "mIoU": 0.99}
    assert all(torch.equal(weights(run, "best")[k], best_weights[k]) for k in best_weights)


def crash_at(monkeypatch, iteration: int) -> None:
    """Make the loss of `iteration` raise, as a power cut would stop the run there."""
    real = T.build_criterion

    def failing(recipe_, dataset, device):
        loss, calls = real(recipe_, dataset, device), {"n": 0}

        def forward(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == iteration:
                raise RuntimeError("power cut")
            return loss(*args, **kwargs)
        return forward
    monkeypatch.setattr(T, "build_criterion", failing)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


@pytest.mark.parametrize("victim", ["model.safetensors", "state.safetensors"])
def test_resume_falls_back_to_the_previous_checkpoint(runs, tmp_path, capsys, monkeypatch, victim):
    straight, run = runs / "six", tmp_path / "run"
    crash_at(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="power cut"):
        T.train(recipe(6), run)
    monkeypatch.undo()
    ckpts = run / "checkpoints"
    assert ckpt.read_pointer(ckpts, "previous")["checkpoint"] == "iter_000002"
    broken = ckpts / "iter_000004" / victim
    _truncate(broken)
    capsys.readouterr()

    T.train(recipe(6), run)
    out = capsys.readouterr().out
    assert (f"warning: the newest checkpoint is unreadable ({broken}: truncated or corrupt safetensors "
            "file (incomplete metadata, file not fully covered)); resuming from the previous one, "
            "iter_000002") in out
    assert f"resumed from {ckpts / 'iter_000002'} at iteration 2" in out
    a, b = weights(straight), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted
    assert [(r["iter"], "mIoU" in r) for r in rows(run)] == [(r["iter"], "mIoU" in r) for r in rows(straight)]


def test_no_readable_checkpoint_is_one_error_naming_the_files(runs, tmp_path):
    run = copy_of(runs, "four", tmp_path)
    for name in ("iter_000002", "iter_000004"):
        _truncate(run / "checkpoints" / name / "model.safetensors")
    with pytest.raises(ckpt.CheckpointError) as info:
        T.Trainer(recipe(6), run)
    message = str(info.value)
    assert message.startswith(f"{run / 'checkpoints'}: no readable checkpoint to resume from: ")
    assert "iter_000004/model.safetensors: truncated" in message
    assert "iter_000002/model.safetensors: truncated" in message


def test_resumed_iterations_are_logged_once(tmp_path, monkeypatch):
    """Rows written after the last checkpoint by the run that died are written
    again by the resumed one: they must not appear twice."""
    run = tmp_path / "run"
    crash_at(monkeypatch, 4)  # rows 1-3 written, the last checkpoint is iteration 2
    with pytest.raises(RuntimeError, match="power cut"):
        T.train(recipe(4), run)
    monkeypatch.undo()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iter": 4, "loss": 1.')  # and a line the kill cut short
    T.train(recipe(4), run)
    assert [(r["iter"], "mIoU" in r) for r in rows(run)] == [(1, False), (2, False), (3, False),
                                                            (4, False), (4, True)]
