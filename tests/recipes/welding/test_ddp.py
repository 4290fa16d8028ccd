"""Data-parallel training computes what one process computes: two gloo processes, each with half of a
fixed batch, give the same welding loss and the same parameter gradients as one process on the whole
batch. The SupCon loss sees every rank's embeddings, gathered with gradients; a wrong gradient scale
there (a factor of the world size, or gradients that stop at the gather) would be silent in training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_step.py")


def _step(out: Path, devices: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), str(out), "--devices", str(devices)], cwd=out, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    _step(tmp_path, 1)
    _step(tmp_path, 2)
    single = torch.load(tmp_path / "step_d1_r0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"step_d2_r{r}.pt", weights_only=True) for r in (0, 1)]

    assert set(single["grads"]) == set(ranks[0]["grads"]) == set(ranks[1]["grads"])
    assert len(single["grads"]) > 20  # every encoder, the fusion and the head
    norm = torch.sqrt(sum(g.pow(2).sum() for g in single["grads"].values()))
    assert norm > 1e-3  # a step that moves the weights, or the comparison below proves nothing
    for rank in ranks:
        torch.testing.assert_close(rank["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
