"""Run folders as mmsegmentation users expect: the same command names the same
folder and resumes there; --fresh starts over; Ctrl-C says how to go on;
--resume skips folders without a checkpoint; --print-recipe shows every key."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from zoo.commands.errors import run
from zoo.engine import rundir
from zoo.engine.trainer import Trainer, train_from_files

RECIPE = {
    "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
              "decoder_channels": [8, 8, 8, 8, 8]},
    "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
             "options": {"num_images": 4, "size": 32}},
    "train": {"iters": 4, "optimizer": "adamw", "lr": 0.001, "log_interval": 1,
              "checkpoint_interval": 2, "threads": 1},
    "eval": {"interval": 4, "max_images": 2},
    "log": {"num_images": 0},
}


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def test_folder_names_follow_the_command():
    assert rundir.default_run_dir("recipes/quickstart.yaml") == Path("runs/quickstart")
    a = rundir.default_run_dir("recipes/quickstart.yaml", ["train.iters=10", "train.lr=0.1"])
    b = rundir.default_run_dir("recipes/quickstart.yaml", ["train.lr=0.1", "train.iters=10"])
    c = rundir.default_run_dir("recipes/quickstart.yaml", ["train.lr=0.2", "train.iters=10"])
    assert a == b != c and a.name.startswith("quickstart-") and len(a.name) == len("quickstart-") + 8
    # The last value of a key wins, as when the recipe is loaded.
    assert rundir.default_run_dir("q.yaml", ["train.lr=0.5", "train.lr=0.1"]) == \
        rundir.default_run_dir("q.yaml", ["train.lr=0.1"])
    assert a.name == "quickstart-1bd187d1"  # the names of runs already on disk stay theirs
    # A key inside another: the order decides the recipe (iters 4, then 5), so the folder.
    assert rundir.default_run_dir("q.yaml", ["train={iters: 5}", "train.iters=4"]) != \
        rundir.default_run_dir("q.yaml", ["train.iters=4", "train={iters: 5}"])
    assert rundir.default_run_dir("q.yaml", ["x=1"], name="mine") == Path("runs/mine")
    with pytest.raises(ValueError, match="--name 'a/b': a folder name"):
        rundir.default_run_dir("q.yaml", name="a/b")


def _interrupt_at(monkeypatch, iteration):
    step = Trainer._step

    def stop(self, it, stream):
        if it == iteration:
            raise KeyboardInterrupt
        return step(self, it, stream)
    monkeypatch.setattr(Trainer, "_step", stop)


def _iters_logged(folder: Path) -> list[int]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["iter"] for r in rows if "loss" in r]


def test_interrupt_names_the_resume_command_and_the_same_command_resumes(recipe, monkeypatch, capsys):
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(SystemExit) as info:
        run(train_from_files, recipe, ["train.seed=1"])
    assert info.value.code == 130
    folder = rundir.default_run_dir(recipe, ["train.seed=1"])
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted; the checkpoint at iteration 2 in {folder} is intact. "
                   f"Resume with: python tools/train.py {recipe} train.seed=1")
    monkeypatch.undo()
    monkeypatch.chdir(recipe.parent)
    train_from_files(recipe, ["train.seed=1"])
    assert _iters_logged(folder) == [1, 2, 3, 4]  # 1 and 2 from the first run, 3 and 4 resumed
    assert json.loads((folder / "checkpoints" / "last.json").read_text())["iteration"] == 4

    # --fresh starts at 0 and keeps the earlier run beside it.
    train_from_files(recipe, ["train.seed=1"], fresh=True)
    aside = [p for p in Path("runs").iterdir() if p.name.startswith(folder.name + ".")]
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "last.json").is_file()
    assert _iters_logged(folder) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="--resume and --fresh contradict"):
        train_from_files(recipe, [], resume=True, fresh=True)


def test_interrupt_before_any_checkpoint(recipe, monkeypatch, capsys):
    _interrupt_at(monkeypatch, 0)
    with pytest.raises(SystemExit):
        run(train_from_files, recipe, [], name="first")
    assert capsys.readouterr().err.strip() == (
        "interrupted; runs/first holds no checkpoint yet, so running again starts over at "
        f"iteration 0: python tools/train.py {recipe} --name first")


def test_resume_skips_folders_without_a_checkpoint(recipe):
    with pytest.raises(FileNotFoundError, match=r"--resume: no folder .*runs/tiny\[-\*\] holds a checkpoint"):
        rundir.pick_run_dir(recipe, resume=True)
    done = Path("runs/tiny-0123abcd/checkpoints")
    done.mkdir(parents=True)
    (done / "iter_000002").mkdir()
    (done / "last.json").write_text(json.dumps({"checkpoint": "iter_000002", "iteration": 2}))
    Path("runs/tiny-ffffffff").mkdir()           # newer, but killed before its first checkpoint
    Path("runs/tinyother/checkpoints").mkdir(parents=True)  # another recipe's folder
    assert rundir.pick_run_dir(recipe, resume=True) == Path("runs/tiny-0123abcd")
    with pytest.raises(FileNotFoundError, match=r"--resume: .*tiny-ffffffff holds no checkpoint"):
        rundir.pick_run_dir(recipe, run_dir="runs/tiny-ffffffff", resume=True)
    assert rundir.pick_run_dir(recipe, run_dir="elsewhere") == Path("elsewhere")  # --run-dir as given


def test_print_recipe_shows_overrides_and_defaults(recipe, capsys):
    from tools.train import main
    main([str(recipe), "train.lr=0.5", "--print-recipe"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.5
    assert printed["train"]["momentum"] == 0.9  # a default the file does not set
    assert printed["model"]["decoder_channels"] == [8, 8, 8, 8, 8]
    assert not os.path.exists("runs")


def test_resume_command_names_the_command_that_started_the_run(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/env/bin/segzoo", "train", "quickstart"])
    assert rundir.resume_command("quickstart", ["train.iters=5"], name="q") == \
        "segzoo train quickstart train.iters=5 --name q"
    monkeypatch.setattr(sys, "argv", ["tools/train.py"])
    assert rundir.resume_command("r.yaml", run_dir="runs/x") == "python tools/train.py r.yaml --run-dir runs/x"
    monkeypatch.setattr(sys, "argv", ["/env/lib/site-packages/zoo/__main__.py"])
    assert rundir.resume_command("quickstart") == "python -m zoo train quickstart"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])  # neither: the checkout's entry point
    assert rundir.resume_command("r.yaml") == "python tools/train.py r.yaml"
