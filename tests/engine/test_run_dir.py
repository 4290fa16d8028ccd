"""All ranks of a run write into one run directory, chosen by global rank 0, even when the
processes were started by torchrun (or srun) and each chose its own before they could talk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sensorium.engine.run import RunConfig, resolve_run_dir

SCRIPT = Path(__file__).with_name("run_dir_ranks.py")


@pytest.mark.slow
def test_torchrun_ranks_share_rank_zeros_run_directory(tmp_path):
    for rank in (0, 1):
        (tmp_path / f"rank{rank}").mkdir()
    # Rank 1 sees a version_0 that rank 0 does not, so on its own it would pick version_1.
    (tmp_path / "rank1" / "runs" / "toy" / "version_0").mkdir(parents=True)
    assert resolve_run_dir(RunConfig(root=str(tmp_path / "rank1" / "runs")), "toy").name == "version_1"

    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", SCRIPT.stem, str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    run = (tmp_path / "rank0" / "runs" / "toy" / "version_0").resolve()
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    assert (run / "written_by_rank1.txt").is_file() and (run / "written_by_rank0.txt").is_file()
    for rank in (0, 1):
        where = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert where == {"default_root_dir": str(run), "checkpoints": [str(run / "checkpoints")] * 2,
                         "export": [str(run / "export")]}, rank
    # Rank 1 made no directory of its own choice, before the broadcast or after.
    assert [p.name for p in (tmp_path / "rank1" / "runs" / "toy").iterdir()] == ["version_0"]
    assert not any((tmp_path / "rank1" / "runs" / "toy" / "version_0").iterdir())
    # One run on disk: checkpoints and export of the fit are in it.
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "export" / "model.safetensors").is_file()
