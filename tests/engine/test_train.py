"""The recipe runner end to end: command lines on miniature official-layout
trees, exact kill-and-resume, non-finite loss, one-line errors for bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import trees
from zoo.engine.recipe import recipe_from_dict
from zoo.hub import formats as ckpt

pytestmark = pytest.mark.train  # every test trains through the recipe runner or its command line

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
              "decoder_channels": [16, 16, 8, 8, 8]}


def run_tool(tool: str, *args, check=True, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_recipe(path: Path, dataset: str, root, *, iters=4, options=None, crop=(48, 48), **sections):
    recipe = {
        "model": dict(TINY_MODEL),
        "data": {"dataset": dataset, "root": str(root) if root else None, "batch_size": 2,
                 "num_workers": 0, "crop_size": list(crop) if crop else None, "options": options or {}},
        "train": {"iters": iters, "seed": 0, "optimizer": "adamw", "lr": 0.001, "log_interval": 2,
                  "checkpoint_interval": 2, "schedule": "poly"},
        "eval": {"interval": iters},
        "log": {"num_images": 1},
    }
    for section, values in sections.items():
        recipe[section].update(values)
    import yaml
    path.write_text(yaml.safe_dump(recipe))
    return path


def assert_complete_run(run_dir: Path, num_classes: int):
    result = json.loads((run_dir / "eval.json").read_text())
    present = [v for v in result["per_class_iou"].values() if v is not None]
    assert result["mIoU"] == pytest.approx(sum(present) / len(present), rel=1e-12)
    assert len(result["per_class_iou"]) == num_classes
    assert len(result["per_class_boundary_iou"]) == num_classes and "trimap_miou" in result
    assert (run_dir / "recipe.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "mIoU" in r][-1]   # the val row of the last evaluation
    assert final["boundary_iou"] == pytest.approx(result["boundary_iou"], nan_ok=True)
    assert (run_dir / "pictures" / "confusion.png").is_file()
    last = ckpt.resolve(run_dir / "checkpoints", "last")
    meta = ckpt.load_meta(last)
    assert meta["model"]["name"] == "unet" and len(meta["classes"]) == num_classes
    assert meta["eval_protocol"]["mode"] == "whole"
    return result


@pytest.mark.parametrize("dataset,make,options,num_classes", [
    ("voc", trees.make_voc, {}, 21),
    ("voc", trees.make_voc, {"__split__": "train_aug"}, 21),
    ("cityscapes", trees.make_cityscapes, {}, 19),
    ("coco", trees.make_coco, {}, 3),
    ("folder", trees.make_folder, {"classes": ["a", "b", "c"]}, 3),
])
def test_train_and_eval_cli_on_official_layouts(tmp_path, dataset, make, options, num_classes):
    root = make(tmp_path)
    split = options.pop("__split__", "train")
    recipe = write_recipe(tmp_path / "r.yaml", dataset, root, options=options,
                          data={"train_split": split})
    run_dir = tmp_path / "run"
    out = run_tool("train.py", recipe, "--run-dir", run_dir)
    assert json.loads(out.stdout.strip().splitlines()[-1])["run_dir"] == str(run_dir)
    trained = assert_complete_run(run_dir, num_classes)
    ev = json.loads(run_tool("eval.py", run_dir, "--checkpoint", "last").stdout)
    assert ev["mIoU"] == pytest.approx(trained["mIoU"], abs=6e-5)
    assert ev["boundary_iou"] == pytest.approx(trained["boundary_iou"], abs=6e-5, nan_ok=True)
    assert ev["boundary_params"]["trimap_width"] == 3


def test_real_camvid_frames(tmp_path, camvid_root):
    recipe = write_recipe(tmp_path / "r.yaml", "camvid", camvid_root, iters=3, crop=(96, 128),
                          eval={"max_images": 3})
    run_tool("train.py", recipe, "--run-dir", tmp_path / "run")
    assert_complete_run(tmp_path / "run", 11)
    pred = run_tool("predict.py", tmp_path / "run", camvid_root / "val" / "0016E5_07959.png",
                    "--out", tmp_path / "preds")
    assert "wrote 2 files" in pred.stdout
    from PIL import Image
    mask = Image.open(tmp_path / "preds" / "0016E5_07959_mask.png")
    assert mask.mode == "P" and mask.size == (480, 360)


def synthetic_recipe(**train):
    return recipe_from_dict({
        "model": dict(TINY_MODEL),
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 8, "size": 48}},
        "train": {"iters": 6, "seed": 3, "lr": 0.01, "log_interval": 3, "checkpoint_interval": 2,
                  "deterministic": True, **train},
        "eval": {"interval": 6, "max_images": 2},
        "log": {"num_images": 0},
    })


def _failing_at(call: int, make_error):
    """Wrap build_criterion so that the loss's `call`-th use misbehaves."""
    from zoo.engine import trainer as T
    real_build = T.build_criterion

    def build(recipe_, dataset, device):
        loss, calls = real_build(recipe_, dataset, device), {"n": 0}

        def forward(*args, **kwargs):
            calls["n"] += 1
            return make_error(loss(*args, **kwargs)) if calls["n"] == call else loss(*args, **kwargs)
        return forward
    return build


def test_crash_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    from zoo.engine import trainer as T
    T.train(synthetic_recipe(), tmp_path / "a")

    def power_cut(_):
        raise RuntimeError("power cut")
    monkeypatch.setattr(T, "build_criterion", _failing_at(5, power_cut))
    with pytest.raises(RuntimeError, match="power cut"):
        T.train(synthetic_recipe(), tmp_path / "b")
    monkeypatch.undo()
    assert ckpt.read_pointer(tmp_path / "b" / "checkpoints", "last")["iteration"] == 4
    T.train(synthetic_recipe(), tmp_path / "b")
    a = load_file(str(ckpt.resolve(tmp_path / "a" / "checkpoints") / "model.safetensors"))
    b = load_file(str(ckpt.resolve(tmp_path / "b" / "checkpoints") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    folders = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["iter_000004", "iter_000006"]  # last, and previous (kept); iter_000002 pruned
    assert ckpt.read_pointer(tmp_path / "b" / "checkpoints", "previous")["checkpoint"] == "iter_000004"


def test_sigkill_and_resume_gives_identical_weights(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "synthetic", None, iters=14, crop=None,
                          options={"num_images": 16, "size": 48},
                          train={"deterministic": True, "checkpoint_interval": 3, "lr": 0.01},
                          eval={"interval": 7, "max_images": 2})
    run_tool("train.py", recipe, "--run-dir", tmp_path / "straight")

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "train.py"), str(recipe),
                             "--run-dir", str(killed)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and ckpt.read_pointer(killed / "checkpoints", "last") is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = ckpt.read_pointer(killed / "checkpoints", "last")["iteration"]
    assert stopped_at < 14
    ckpt.load_meta(ckpt.resolve(killed / "checkpoints"))  # the pointer names a complete folder

    run_tool("train.py", recipe, "--run-dir", killed)  # same folder: resumes
    log = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["iter"] == 14
    a = load_file(str(ckpt.resolve(tmp_path / "straight" / "checkpoints") / "model.safetensors"))
    b = load_file(str(ckpt.resolve(killed / "checkpoints") / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from zoo.engine import trainer as T
    monkeypatch.setattr(T, "build_criterion", _failing_at(5, lambda loss: loss * float("nan")))
    with pytest.raises(T.TrainingError, match=r"non-finite loss \(nan\) at iteration 5.*iter_000004 is intact"):
        T.train(synthetic_recipe(), tmp_path / "run")
    weights = load_file(str(ckpt.resolve(tmp_path / "run" / "checkpoints") / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def _error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unknown_key_and_wrong_type_are_one_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "synthetic", None, crop=None)
    line = _error_line(run_tool("train.py", recipe, "train.lrr=0.1", check=False))
    assert "train.lrr" in line and "train.lr" in line
    line = _error_line(run_tool("train.py", recipe, "train.iters=abc", check=False))
    assert "train.iters" in line and "expected int" in line


def test_missing_root_names_the_path(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "voc", tmp_path / "nowhere")
    line = _error_line(run_tool("train.py", recipe, check=False))
    assert str(tmp_path / "nowhere") in line


@pytest.mark.parametrize("damage,expected", [
    ("corrupt", "cannot read image"),
    ("size", "size"),
    ("label", "label"),
])
def test_bad_files_name_the_culprit(tmp_path, damage, expected):
    root = trees.make_folder(tmp_path)
    victim = root / "train" / "images" / "img0.png"
    if damage == "corrupt":
        victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        culprit = victim
    elif damage == "size":
        from PIL import Image
        culprit = root / "train" / "masks" / "img0.png"
        Image.open(culprit).resize((20, 20)).save(culprit)
    else:
        import numpy as np
        from PIL import Image
        culprit = root / "train" / "masks" / "img0.png"
        Image.fromarray(np.full((64, 80), 7, np.uint8)).save(culprit)
    recipe = write_recipe(tmp_path / "r.yaml", "folder", root, options={"classes": ["a", "b", "c"]},
                          data={"num_workers": 1})
    line = _error_line(run_tool("train.py", recipe, "--run-dir", tmp_path / "run", check=False))
    assert str(culprit) in line and expected in line.lower()


def test_wandb_offline_logging_and_class_weights(tmp_path, monkeypatch):
    """log.wandb=true with no API key logs offline into the run folder."""
    from zoo.engine.logging import _logged_in
    from zoo.engine.trainer import train
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert _logged_in()  # `wandb login` keeps its key there: such a user logs online
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert not _logged_in()
    recipe = synthetic_recipe(class_weights="median_frequency")
    recipe.log.wandb = True
    recipe.log.num_images = 1
    train(recipe, tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert (tmp_path / "run" / "wandb_id.txt").read_text().strip() in runs[0].name


def test_pictures_when_eval_transforms_resize(tmp_path):
    """Overlays are drawn on the original frame even when the model sees a resized one."""
    from PIL import Image

    from zoo.engine.trainer import train
    recipe = synthetic_recipe(iters=2)
    recipe.eval.interval = 2
    recipe.data.val_transforms = [{"name": "Resize", "params": {"height": 32, "width": 40}}]
    recipe.log.num_images = 1
    train(recipe, tmp_path / "run")
    panel = Image.open(next((tmp_path / "run" / "pictures").glob("00_*.png")))
    from zoo.engine.visualize import MIN_PANEL_WIDTH
    f = -(-MIN_PANEL_WIDTH // 48)  # the 48x48 frame, enlarged by a whole factor, not the 32x40 input
    assert panel.size[0] == 3 * 48 * f + 2 * 4 and panel.size[1] > 48 * f  # + titles and legend


def test_val_log_line_and_row_carry_boundary_metrics(tmp_path, capsys):
    from zoo.engine.logging import RunLogger
    log = RunLogger(tmp_path, total_iters=10)
    result = {"mIoU": 0.5, "pixel_acc": 0.75, "mean_acc": 0.625, "per_class_iou": {"a": 0.5},
              "boundary_iou": 0.25, "trimap_miou": 0.375, "confusion": [[1]]}
    log.eval_result(9, result, ["a"])
    log.close()
    assert capsys.readouterr().out.strip() == ("[10/10] val mIoU 0.5000  pixel acc 0.7500  "
                                               "boundary IoU 0.2500  trimap mIoU 0.3750")
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"iter": 10, "mIoU": 0.5, "pixel_acc": 0.75, "mean_acc": 0.625,
                   "boundary_iou": 0.25, "trimap_miou": 0.375, "per_class_iou": {"a": 0.5}}


def test_an_upsampler_from_a_test_file_and_groupnorm_train_through_a_recipe(tmp_path):
    """model.upsample names a class defined in tests/models/test_models.py (with an option),
    model.norm_layer a GroupNorm: tools/train.py trains it, and the run folder rebuilds it."""
    spec = {"name": "tests.models.test_models:SharpUpsample", "amount": 0.25}
    recipe = write_recipe(tmp_path / "r.yaml", "synthetic", None, iters=2, crop=None,
                          options={"num_images": 4, "size": 32},
                          model={"upsample": spec, "norm_layer": "groupnorm"}, log={"num_images": 0})
    run_tool("train.py", recipe, "--run-dir", tmp_path / "run")
    meta = ckpt.load_meta(ckpt.resolve(tmp_path / "run" / "checkpoints", "last"))
    assert meta["model"]["upsample"] == spec and meta["model"]["norm_layer"] == "groupnorm"
    import zoo
    from tests.models.test_models import SharpUpsample
    model = zoo.load(tmp_path / "run", pointer="last")
    ups = [m for m in model.head.modules() if isinstance(m, SharpUpsample)]
    assert len(ups) == 5 and all(u.guide_channels is not None for u in ups)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.head.modules())
