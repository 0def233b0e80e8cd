"""Shared test setup: small, deterministic, CPU-only."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CAMVID = Path(os.environ.get("ZOO_CAMVID", REPO.parent / "shared" / "data" / "camvid"))


@pytest.fixture
def camvid_root():
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
