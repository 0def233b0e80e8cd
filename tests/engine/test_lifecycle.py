"""A run's lifecycle under the accidents users meet: a second command on a busy
folder, a run folder that is a file, Ctrl-C, a long run checkpointed by the clock,
more loader workers than cores, and what `segzoo eval` ends with.
Runs in-process on the synthetic scenes (a few seconds each)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from tests.engine.test_rundir import RECIPE as TINY_RECIPE
from zoo.commands.errors import run
from zoo.engine.recipe import RecipeError, recipe_from_dict
from zoo.engine.rundir import RunFolderBusy, lock_run_dir
from zoo.engine.trainer import Trainer, train, train_from_files
from zoo.hub import formats as ckpt

REPO = Path(__file__).resolve().parents[2]
RECIPE = TINY_RECIPE  # the run-folder tests' tiny U-Net on synthetic scenes


def tiny(**train_keys):
    return recipe_from_dict({**RECIPE, "train": {**RECIPE["train"], **train_keys}})


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def _error(capsys, fn, *args, **kwargs) -> str:
    with pytest.raises(SystemExit) as info:
        run(fn, *args, **kwargs)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- item 7

def test_a_run_folder_that_is_a_file_is_one_line(recipe_file, capsys):
    Path("taken").write_text("not a folder\n")
    assert _error(capsys, train_from_files, recipe_file, [], run_dir="taken") == (
        "error: --run-dir taken is a file, not a folder; name a new folder or an earlier run's")
    assert _error(capsys, train_from_files, recipe_file, [], run_dir="taken/run") == (
        "error: --run-dir taken/run lies under taken, which is a file, not a folder; name a new "
        "folder or an earlier run's")
    Path("runs").write_text("")
    assert _error(capsys, train_from_files, recipe_file, [], name="mine") == (
        "error: the run folder runs/mine lies under runs, which is a file, not a folder; name a new "
        "folder or an earlier run's")
    assert Path("taken").read_text() == "not a folder\n"


# ----------------------------------------------------------------------------- item 11

HOLD = ("import sys, time\n"
        "from zoo.engine.rundir import lock_run_dir\n"
        "lock_run_dir(sys.argv[1])\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


@pytest.fixture
def held(tmp_path):
    """A run folder whose lock another process holds; yields (folder, that process)."""
    folder = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield folder, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.train
def test_a_second_command_on_a_busy_folder_is_refused_naming_the_process(held, recipe_file, capsys):
    folder, proc = held
    expected = (f"{folder} is in use by process {proc.pid} on {socket.gethostname()} (lock file "
                f"{folder / '.lock'}); wait for it to end, or train into another folder (--name, --run-dir)")
    with pytest.raises(RunFolderBusy) as info:
        lock_run_dir(folder)
    assert str(info.value) == expected
    assert _error(capsys, train_from_files, recipe_file, [], run_dir=str(folder)) == f"error: {expected}"
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # the second wrote nothing there
    # --fresh does not move a running run's folder away from it
    (folder / "metrics.jsonl").write_text("")
    assert _error(capsys, train_from_files, recipe_file, [], run_dir=str(folder), fresh=True) == \
        f"error: {expected}"
    assert (folder / "metrics.jsonl").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith("busy.")]  # nothing moved aside


@pytest.mark.train
def test_a_lock_left_by_a_dead_process_does_not_block(held):
    folder, proc = held
    proc.kill()  # SIGKILL: no clean-up ran, the lock file stays
    proc.wait()
    assert (folder / ".lock").read_text().startswith(f"process {proc.pid} ")
    train(tiny(iters=2), folder)
    assert ckpt.read_pointer(folder / "checkpoints", "last")["iteration"] == 2
    assert not (folder / ".lock").exists()  # released at the end


@pytest.mark.train
def test_one_process_two_trainers_and_release(tmp_path):
    first = Trainer(tiny(), tmp_path / "run")
    with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()} on"):
        Trainer(tiny(), tmp_path / "run")
    first.release()
    Trainer(tiny(), tmp_path / "run").fit()  # free again
    # a Trainer that fails to start leaves no lock, and no folder it created
    with pytest.raises(RecipeError):
        Trainer(tiny(iters=1), tmp_path / "run")  # below the iteration the run reached
    with pytest.raises(ValueError, match="train.class_weights has 1 values"):
        Trainer(tiny(class_weights=[1.0]), tmp_path / "never")
    assert not (tmp_path / "never").exists() and not (tmp_path / "run" / ".lock").exists()


# ----------------------------------------------------------------------------- item 13

def _sigint_at(monkeypatch, iteration: int, times: int = 1):
    """Ctrl-C, `times` times, while the step of `iteration` (0-based) is under way."""
    step = Trainer._step

    def interrupted(self, it, stream):
        if it == iteration:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return step(self, it, stream)
    monkeypatch.setattr(Trainer, "_step", interrupted)


@pytest.mark.train
def test_ctrl_c_finishes_the_step_writes_a_checkpoint_then_stops(recipe_file, monkeypatch, capsys):
    _sigint_at(monkeypatch, 0)  # before the first checkpoint_interval
    with pytest.raises(SystemExit) as info:
        run(train_from_files, recipe_file, [], name="first")
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupt: finishing this step, then writing a checkpoint (Ctrl-C again stops at once" in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted; the checkpoint at iteration 1 in runs/first is intact. Resume with: "
        f"python tools/train.py {recipe_file} --name first")
    state = ckpt.load_train_state(ckpt.resolve(Path("runs/first/checkpoints")))
    assert (state["iteration"], state["samples_seen"]) == (1, 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back
    monkeypatch.undo()
    monkeypatch.chdir(recipe_file.parent)
    train_from_files(recipe_file, [], name="first")
    rows = [json.loads(line) for line in Path("runs/first/metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.train
def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(recipe_file, monkeypatch, capsys):
    _sigint_at(monkeypatch, 2, times=2)
    with pytest.raises(SystemExit):
        run(train_from_files, recipe_file, [], name="twice")
    assert "checkpoint at iteration 2 in runs/twice is intact" in capsys.readouterr().err
    assert not Path("runs/twice/.lock").exists()


@pytest.mark.train
def test_checkpoint_minutes_checkpoints_by_the_clock(tmp_path):
    train(tiny(iters=3, checkpoint_interval=100, checkpoint_minutes=1e-9), tmp_path / "clock")
    pointers = tmp_path / "clock" / "checkpoints"
    assert ckpt.read_pointer(pointers, "previous")["iteration"] == 2  # not an interval's multiple
    assert ckpt.read_pointer(pointers, "last")["iteration"] == 3
    train(tiny(iters=3, checkpoint_interval=100), tmp_path / "interval")
    assert ckpt.read_pointer(tmp_path / "interval" / "checkpoints", "previous") is None
    with pytest.raises(RecipeError, match="train.checkpoint_minutes"):
        tiny(checkpoint_minutes=0)


# ----------------------------------------------------------------------------- item 14

@pytest.mark.train
def test_workers_capped_at_the_cores_and_a_first_line_early(tmp_path, monkeypatch, capsys):
    from zoo.engine import data
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    recipe = recipe_from_dict({**RECIPE, "data": {**RECIPE["data"], "num_workers": 3},
                               "train": {**RECIPE["train"], "iters": 2}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "worker processes in total" warning among them
        train(recipe, tmp_path / "run")
    out = capsys.readouterr().out.splitlines()
    assert out.count("data.num_workers=3 capped at 1, the CPU cores this process may use") == 1
    assert out[0].startswith("SyntheticScenes: 4 train / 4 val images; model unet (") and \
        out[0].endswith("loader workers 1")
    first = [line for line in out if "first step" in line]
    assert len(first) == 1 and first[0].startswith("[1/2] first step ") and \
        first[0].endswith("waiting for data); a progress line every 1 iterations")
    assert data.loader_workers(1) == (1, None)


# ----------------------------------------------------------------------------- item 15

@pytest.mark.train
def test_eval_ends_with_a_summary_line(tmp_path, capsys):
    from zoo.commands.eval import main
    train(tiny(iters=2), tmp_path / "run")
    capsys.readouterr()
    main([str(tmp_path / "run"), "--device", "cpu"])
    out, err = capsys.readouterr()
    written = tmp_path / "run" / "eval-val-whole.json"
    result = json.loads(written.read_text())
    assert err.splitlines()[-1] == (
        f"val: mIoU {result['mIoU']:.4f}  pixel acc {result['pixel_acc']:.4f}  boundary IoU "
        f"{result['boundary_iou']:.4f}  trimap mIoU {result['trimap_miou']:.4f}; written to {written}")
    assert json.loads(out)["mIoU"] == round(result["mIoU"], 4)  # stdout: JSON alone, for scripts
