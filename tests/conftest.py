"""Shared test setup: small, deterministic, CPU-only."""
import os
from pathlib import Path

import pytest
import torch


def threads_from_env() -> int:
    """ZOO_TEST_THREADS, else OMP_NUM_THREADS, else 2 (at most the cores there are):
    on a busy machine `OMP_NUM_THREADS=1 pytest` keeps the suite from oversubscribing."""
    for var in ("ZOO_TEST_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise pytest.UsageError(f"{var}={value!r}: expected a positive number of threads")
            return int(value)
    return max(1, min(2, os.cpu_count() or 1))


SUITE_THREADS = threads_from_env()
torch.set_num_threads(SUITE_THREADS)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
# Real CamVid, where the recipes' `root: camvid` finds it: $ZOO_CAMVID, else $ZOO_DATA/camvid,
# else the checkout's sibling ../shared/data/camvid (this project's own machines).
_DATA = Path(os.environ["ZOO_DATA"]) if os.environ.get("ZOO_DATA") else REPO.parent / "shared" / "data"
CAMVID = Path(os.environ.get("ZOO_CAMVID", _DATA / "camvid"))


@pytest.fixture
def camvid_root():
    """The real CamVid folder (SegNet layout); skips the test where it is absent."""
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID} (set ZOO_DATA to the folder holding camvid/)")
    return CAMVID


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _suite_threads():
    """Training in-process applies `train.threads`, and some tests pin one thread: every
    test starts with the suite's own count, whatever the one before it set."""
    if torch.get_num_threads() != SUITE_THREADS:
        torch.set_num_threads(SUITE_THREADS)
    yield


def tiny_unet_recipe(size, num_images: int, **sections) -> dict:
    """A tiny U-Net (test_resnet, decoder widths 8) trained two AdamW steps on synthetic
    frames of `size`, checkpointed and scored on one val image at step 2; `sections`
    ("data", "train", "eval", ...) update the matching section."""
    recipe = {
        "model": {"name": "unet", "encoder": "test_resnet", "encoder_weights": None,
                  "decoder_channels": [8, 8, 8, 8, 8]},
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": num_images, "size": list(size)}},
        "train": {"iters": 2, "checkpoint_interval": 2, "lr": 0.01, "optimizer": "adamw"},
        "eval": {"interval": 2, "max_images": 1},
        "log": {"num_images": 0},
    }
    for name, values in sections.items():
        recipe[name].update(values)
    return recipe


@pytest.fixture(scope="session")
def train_tiny_run(tmp_path_factory):
    """`train_tiny_run(recipe, name)`: train a recipe dict (`tiny_unet_recipe`) into a
    fresh run folder and return the folder."""
    def train_run(recipe: dict, name: str = "run") -> Path:
        from zoo.engine.recipe import recipe_from_dict
        from zoo.engine.trainer import train
        run_dir = tmp_path_factory.mktemp(name) / "run"
        train(recipe_from_dict(recipe), run_dir)
        return run_dir
    return train_run


@pytest.fixture
def one_thread():
    """One torch thread for this test (after `_suite_threads` set the suite's count): tiny
    models gain nothing from a second thread, and on a busy machine it only waits."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(SUITE_THREADS)
