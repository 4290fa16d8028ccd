"""Shared test settings: small thread pools (the CI machine has 2 cores and pytest-xdist runs 2
workers), deterministic seeds, and a fixture that makes tests/engine's toy recipe importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(TESTS / "engine"))  # toy_recipe.py: the engine's test recipe
sys.path.insert(0, str(TESTS / "recipes"))  # split_checks.py: what every recipe shows of its splits


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
