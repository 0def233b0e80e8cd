"""The package as a user installs it: the `segzoo` command, its packaged
recipes, a light `import zoo`, and (slow) a wheel in a fresh environment."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import zoo
from zoo.commands import COMMANDS
from zoo.commands import main as segzoo
from zoo.engine.packaged import find_recipe, packaged_recipes, recipe_dir

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("pyproject.toml", "README.md", "LICENSE", "zoo", "decoders", "recipes")
HEAVY = ("albumentations", "cv2", "segmentation_models_pytorch", "matplotlib", "pycocotools")


def test_every_package_folder_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = sorted(str(p.parent.relative_to(REPO)).replace(os.sep, ".")
                   for top in ("zoo", "decoders") for p in (REPO / top).rglob("__init__.py"))
    assert sorted(set(config["packages"]) - {"zoo.recipes"}) == found
    assert config["package-dir"] == {"zoo.recipes": "recipes"}
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"] == {
        "segzoo": "zoo.commands:main"}


@pytest.mark.train
def test_import_and_create_leave_the_heavy_libraries_unloaded():
    code = ("import sys, zoo\n"
            "zoo.create('unet', encoder='test_resnet', num_classes=3, decoder_channels=[8] * 5)\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


def test_recipes_are_found_by_name_and_by_path(tmp_path, monkeypatch):
    assert recipe_dir() == REPO / "recipes"  # a checkout reads its own folder
    assert find_recipe("quickstart") == find_recipe("quickstart.yaml") == REPO / "recipes" / "quickstart.yaml"
    local = tmp_path / "quickstart.yaml"
    local.write_text("model: {name: unet}\n")
    monkeypatch.chdir(tmp_path)
    assert find_recipe("quickstart.yaml") == Path("quickstart.yaml")  # a file here wins over the package
    assert find_recipe(local) == local
    with pytest.raises(FileNotFoundError, match=r"^nested/quickstart\.yaml: no such recipe file"):
        find_recipe("nested/quickstart.yaml")  # a path is never read as a name
    with pytest.raises(FileNotFoundError, match=r"pspnet_vocc: .*did you mean pspnet_voc, "):
        find_recipe("pspnet_vocc")


def test_train_list_names_every_packaged_recipe(capsys):
    from zoo.commands.train import main
    main(["--list"])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(packaged_recipes())
    quick = next(ln for ln in lines if ln.startswith("quickstart "))
    assert quick.split(None, 1)[1] == \
        "Quickstart: U-Net on a tiny timm encoder over the embedded synthetic scenes."
    long = next(ln for ln in lines if ln.startswith("ablation_camvid "))  # a header of several lines
    assert long.split(None, 1)[1].startswith("Decoder ablation on CamVid (11 classes)")
    assert long.endswith(" ...") and len(long.split(None, 1)[1]) <= 100


def test_segzoo_dispatches_and_names_unknown_commands(capsys):
    assert segzoo(["list", "fcn*"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == zoo.list_models("fcn*") and {"fcn16s", "fcn32s", "fcn8s"} <= set(listed)
    assert segzoo(["list", "fcn8s_resnet10t*", "--cost", "--size", "64", "64"]) == 0  # an entry's cost too
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[0] == "fcn8s_resnet10t_camvid" and float(rows[1].split()[1]) > 1  # params (M)
    assert segzoo(["trian"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'trian'; did you mean train?")
    assert segzoo(["--help"]) == 0
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")] == \
        list(COMMANDS)
    with pytest.raises(SystemExit):  # argparse's own usage error, under the subcommand's name
        segzoo(["eval"])
    assert capsys.readouterr().err.startswith("usage: segzoo eval ")


@pytest.mark.train
def test_python_m_zoo_is_the_same_command_line():
    proc = subprocess.run([sys.executable, "-m", "zoo", "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (proc.returncode, proc.stdout) == (0, f"segzoo {zoo.__version__}\n")
    proc = subprocess.run([sys.executable, "-m", "zoo"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and proc.stderr.startswith("usage: segzoo <command>")


def _fresh_venv(where: Path) -> Path:
    """A virtual environment that sees this one's libraries through a .pth file
    (nothing is downloaded) but not its segzoo; returns its python."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    # Paths added by a .pth line are not scanned for .pth files, so this
    # environment's editable install of segzoo stays out of sight.
    (Path(own) / "_shared_libraries.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path):
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    for name in SOURCE:  # setuptools builds inside the source tree: a copy keeps the checkout clean
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", dist, source], check=True, cwd=tmp_path)
    python = _fresh_venv(tmp_path / "env")
    wheel, = dist.glob("segzoo-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                    "-q", wheel], check=True, cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    segzoo_bin = [str(python.parent / "segzoo")]

    def run(*args) -> str:
        proc = subprocess.run([*map(str, args)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    where = run(python, "-c", "import zoo, zoo.engine.packaged as p; print(zoo.__file__); print(p.recipe_dir())")
    assert where.splitlines()[0].startswith(str(tmp_path / "env"))
    assert Path(where.splitlines()[1]) == Path(where.splitlines()[0]).parent / "recipes"
    assert "unet" in run(*segzoo_bin, "list").split()
    assert "pspnet_voc" in run(*segzoo_bin, "train", "--list")
    run(*segzoo_bin, "train", "quickstart", "train.iters=4", "train.warmup_iters=0", "eval.interval=4",
        "train.checkpoint_interval=4", "data.num_workers=0", "data.options={num_images: 16}", "log.num_images=1",
        "--run-dir", "run")
    assert (work / "run" / "eval.json").is_file() and (work / "run" / "checkpoints" / "best.json").is_file()
    result = json.loads(run(*segzoo_bin, "eval", "run", "--max-images", "4", "--device", "cpu"))
    assert 0.0 <= result["mIoU"] <= 1.0 and len(result["per_class_iou"]) > 1
