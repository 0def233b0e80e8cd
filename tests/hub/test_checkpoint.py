"""Checkpoint folders and pointers: crash safety at every step of a write, the
`previous` pointer, and damaged files named in one-line errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from zoo.hub import formats as ckpt


def _save(ckpt_dir: Path, it: int, value: float) -> Path:
    return ckpt.save_checkpoint(ckpt_dir, f"iter_{it:06d}", model_state={"w": torch.full((3,), value)},
                                meta={"iteration": it}, train_state={"step": torch.tensor(it), "it": it})


def _assert_pointers_name_complete_folders(ckpt_dir: Path) -> dict:
    named = {}
    for pointer in ("last", "previous", "best"):
        path = ckpt.resolve(ckpt_dir, pointer)
        if path is not None:
            ckpt.load_meta(path)
            named[pointer] = (path.name, ckpt.read_weights(path)["w"][0].item())
    return named


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("step", ["os.replace", "shutil.rmtree"])
def test_writing_an_iteration_again_never_leaves_a_pointer_to_nothing(tmp_path, monkeypatch, step):
    """Iteration 4 written again (a run resumed from an earlier checkpoint gets
    there a second time) while `best` names the first iteration 4: a failure
    (or a kill) at any step of the write leaves both pointers on complete folders."""
    d = tmp_path / "checkpoints"
    first = _save(d, 4, 1.0)
    ckpt.set_pointer(d, "best", first, iteration=4, mIoU=0.5)
    ckpt.set_pointer(d, "last", first, iteration=4)
    real = {"os.replace": os.replace, "shutil.rmtree": shutil.rmtree}[step]

    def fail_on_folders(src, *args, **kwargs):
        # Any folder renamed (old aside, new into place), or a checkpoint folder (not a
        # temporary one) removed: the write stops right there, as a kill would stop it.
        if Path(src).is_dir() and (step == "os.replace" or not Path(src).name.startswith(".")):
            raise Boom(f"{step} {src}")
        return real(src, *args, **kwargs)
    monkeypatch.setattr(step, fail_on_folders)
    try:
        _save(d, 4, 2.0)
    except Boom:
        pass
    monkeypatch.undo()
    ckpt.prune(d)  # as the next pointer update would: what no pointer names goes
    assert _assert_pointers_name_complete_folders(d) == {"best": ("iter_000004", 1.0),
                                                         "last": ("iter_000004", 1.0)}

    second = _save(d, 4, 2.0)  # without failures: a new folder; `best` keeps the weights its mIoU is of
    assert second.name == "iter_000004-1"
    ckpt.set_pointer(d, "last", second, iteration=4)
    assert _assert_pointers_name_complete_folders(d) == {
        "best": ("iter_000004", 1.0), "last": ("iter_000004-1", 2.0), "previous": ("iter_000004", 1.0)}
    assert sorted(p.name for p in d.iterdir()) == ["best.json", "iter_000004", "iter_000004-1",
                                                   "last.json", "previous.json"]


def test_previous_keeps_one_older_checkpoint_and_pruning_the_rest(tmp_path):
    d = tmp_path / "checkpoints"
    for it in (2, 4, 6):
        ckpt.set_pointer(d, "last", _save(d, it, float(it)), iteration=it)
    assert ckpt.read_pointer(d, "last") == {"checkpoint": "iter_000006", "iteration": 6}
    assert ckpt.read_pointer(d, "previous") == {"checkpoint": "iter_000004", "iteration": 4}
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["iter_000004", "iter_000006"]
    ckpt.set_pointer(d, "last", d / "iter_000006", iteration=6)  # the same again: previous stays
    assert ckpt.read_pointer(d, "previous")["checkpoint"] == "iter_000004"


def _truncated(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4] if keep is None else data[:keep])
    return path


@pytest.mark.parametrize("name, keep, detail", [
    ("model.safetensors", None, "incomplete metadata, file not fully covered"),
    ("model.safetensors", 4, "header too small"),
    ("state.safetensors", None, "incomplete metadata, file not fully covered"),
])
def test_truncated_tensors_name_the_file(tmp_path, name, keep, detail):
    folder = _save(tmp_path, 4, 1.0)
    path = _truncated(folder / name, keep)
    load = ckpt.read_weights if name == "model.safetensors" else ckpt.load_train_state
    with pytest.raises(ckpt.CheckpointError) as info:
        load(folder)
    assert str(info.value) == f"{path}: truncated or corrupt safetensors file ({detail})"
    if name == "model.safetensors":
        with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt safetensors file"):
            ckpt.check_readable(folder)  # reads the header only


@pytest.mark.parametrize("name, load", [("meta.json", ckpt.load_meta), ("state.json", ckpt.load_train_state)])
def test_truncated_json_names_the_file(tmp_path, name, load):
    folder = _save(tmp_path, 4, 1.0)
    path = folder / name
    path.write_text(path.read_text()[:10])
    with pytest.raises(ckpt.CheckpointError) as info:
        load(folder)
    assert str(info.value).startswith(f"{path}: truncated or corrupt JSON file (")


def test_state_skeleton_and_tensors_that_disagree(tmp_path):
    folder = _save(tmp_path, 4, 1.0)
    (folder / "state.json").write_text(json.dumps({"__dict__": {'"x"': {"__tensor__": "/nope"}}}))
    with pytest.raises(ckpt.CheckpointError, match=r"state.json: does not match state.safetensors"):
        ckpt.load_train_state(folder)


def test_round_trip(tmp_path):
    folder = _save(tmp_path, 4, 1.5)
    assert ckpt.load_meta(folder) == {"format": ckpt.FORMAT, "iteration": 4}
    assert torch.equal(ckpt.read_weights(folder)["w"], torch.full((3,), 1.5))
    state = ckpt.load_train_state(folder)
    assert state["it"] == 4 and torch.equal(state["step"], torch.tensor(4))


def test_zoo_load_names_a_truncated_weights_file(tmp_path):
    """zoo.load on a run folder and on a bare checkpoint folder whose weights were cut short."""
    import zoo
    model = zoo.create("unet", encoder="test_resnet", num_classes=3, decoder_channels=(8, 8, 8, 8, 8))
    run = tmp_path / "run"
    folder = ckpt.save_checkpoint(run / "checkpoints", "iter_000001", model_state=model.state_dict(),
                                  meta={"model": {"name": "unet", "encoder": "test_resnet", "num_classes": 3,
                                                  "decoder_channels": [8, 8, 8, 8, 8]}, "iteration": 1})
    ckpt.set_pointer(run / "checkpoints", "last", folder, iteration=1)
    assert zoo.load(run).meta["iteration"] == 1
    weights = _truncated(folder / "model.safetensors")
    for source in (run, folder):
        with pytest.raises(ckpt.CheckpointError) as info:
            zoo.load(source)
        assert str(info.value) == (f"{weights}: truncated or corrupt safetensors file "
                                   "(incomplete metadata, file not fully covered)")
