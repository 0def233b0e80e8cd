"""The test suite takes its thread count from the environment (tests/conftest.py)."""
import os

import pytest
import torch

from tests.conftest import threads_from_env


def test_suite_runs_with_the_threads_the_environment_asks_for(monkeypatch):
    assert torch.get_num_threads() == threads_from_env()
    monkeypatch.delenv("ZOO_TEST_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_from_env() == 1
    monkeypatch.setenv("ZOO_TEST_THREADS", "3")  # the suite's own setting wins
    assert threads_from_env() == 3
    monkeypatch.delenv("ZOO_TEST_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_from_env() == max(1, min(2, os.cpu_count() or 1))
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    with pytest.raises(pytest.UsageError, match=r"^OMP_NUM_THREADS='0': expected a positive number"):
        threads_from_env()
