"""Each recipe's PAPER config, launched the way a cluster launches it, on CPU:

    torchrun --nproc-per-node 2 --standalone -m sensorium.cli fit --config <recipe>/paper ...

Two gloo ranks run the packaged paper YAML with only its sizes shrunk (paper_ranks.py) and every
pretrained encoder a tiny random `transformers` checkpoint in a local folder, with gradient
accumulation, for one epoch (2 optimiser steps) and one validation; then the run resumes from its
last.ckpt for one more epoch. The same command on ONE process (`python -m sensorium.cli fit
--trainer.devices 1`) is the reference for an epoch's length. What a multi-rank launch must keep:

- one run directory, whatever launched the ranks (torchrun starts every rank alike, with no parent
  process to choose it);
- an epoch of the same number of training batches per rank, and optimiser steps, on 1 and 2 ranks
  (`batches_per_epoch` is per rank);
- every epoch-level metric identical on every rank, and no Lightning warning that one was logged
  without `sync_dist`;
- a finite loss; a resume that continues the saved step count in the same run directory and
  appends to its metrics.csv.

Launch settings: accelerator cpu, strategy ddp (gloo), precision bf16-mixed: the paper's own
precision, except tactile's 16-mixed, which a CPU cannot run usefully (fp16 matmuls at ~2 GFLOP/s).
Each test takes about 25 s on an idle 2-core machine (two torchrun launches and one single-process
run, one thread per process).
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # paper_ranks, here and in the launched ranks (PYTHONPATH below)

import paper_ranks

from sensorium.engine.checkpoint import load_checkpoint

EPOCHS = 1
CPU = ["--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed",
       "--trainer.accumulate_grad_batches", "2", "--trainer.enable_progress_bar", "false",
       "--trainer.callbacks+=paper_ranks.DumpRankMetrics"]
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
ONE_PROCESS = ["--trainer.devices", "1", "--trainer.strategy", "auto"]
SYNC_WARNING = re.compile(r"self\.log\('([^']+)', \.\.\., sync_dist=True\)")


def _launch(args: list[str], dump: Path, cwd: Path, ranks: int) -> subprocess.CompletedProcess:
    if ranks == 1:
        launcher = [sys.executable, "-m", "sensorium.cli"]
    else:  # what the torchrun console script runs
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                    "--standalone", "-m", "sensorium.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           paper_ranks.DUMP_ENV: str(dump),
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([*launcher, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, f"{' '.join(launcher)} fit exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def _train_records(dump: Path, rank: int) -> list[dict]:
    return [r for r in paper_ranks.read_dump(dump, rank) if r["stage"] == "train"]


def _rank_disagreements(dump: Path) -> list[str]:
    """Epoch-level metrics whose value differs between rank 0 and rank 1, record by record."""
    ranks = [paper_ranks.read_dump(dump, r) for r in (0, 1)]
    assert ranks[0] and len(ranks[0]) == len(ranks[1]), f"records per rank: {len(ranks[0])}, {len(ranks[1])}"
    problems = []
    for zero, one in zip(*ranks):
        assert (zero["stage"], zero["epoch"]) == (one["stage"], one["epoch"])
        for key in sorted(set(zero["metrics"]) | set(one["metrics"])):
            a, b = zero["metrics"].get(key), one["metrics"].get(key)
            if a is None or b is None or not (math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
                                              or (math.isnan(a) and math.isnan(b))):
                where = f"{zero['stage']} epoch {zero['epoch']}"
                problems.append(f"{where}: {key} = {a} on rank 0, {b} on rank 1")
    return problems


def _unsynced(launched: subprocess.CompletedProcess) -> list[str]:
    """The names in Lightning's warning about an epoch-level value logged without sync_dist (a
    Python warning on stderr; stdout too, should logging ever capture warnings)."""
    return sorted(set(SYNC_WARNING.findall(launched.stderr + launched.stdout)))


def _metrics_csv(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _steps(run: Path) -> int:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(paper_ranks.BUILDERS))
def test_paper_config_under_torchrun_matches_one_process_and_resumes(recipe, tmp_path):
    data, sizes = paper_ranks.BUILDERS[recipe](tmp_path)
    runs = tmp_path / "runs"

    def fit(dump: str, ranks: int, *extra: str) -> subprocess.CompletedProcess:
        args = ["fit", "--config", f"{recipe}/paper", "--data.root", str(data), *sizes, *CPU, *extra]
        return _launch(args, tmp_path / dump, tmp_path, ranks)

    launched = fit("dump_ddp", 2, *DDP, "--trainer.max_epochs", str(EPOCHS), "--run.root", str(runs))
    problems = []

    # One run directory for both ranks (the one with last.ckpt is rank 0's).
    made = sorted(p.name for p in (runs / recipe).iterdir())
    if len(made) != 1:
        problems.append(f"the two ranks made {len(made)} run directories under runs/{recipe}: {made}")
    saved = [runs / recipe / m for m in made if (runs / recipe / m / "checkpoints" / "last.ckpt").is_file()]
    assert len(saved) == 1, f"run directories {made}, of which {len(saved)} hold checkpoints/last.ckpt"
    run = saved[0]

    # Every epoch-level metric the same on both ranks, and none logged without sync_dist.
    problems += _rank_disagreements(tmp_path / "dump_ddp")
    unsynced = _unsynced(launched)
    if unsynced:
        problems.append(f"Lightning warns that epoch-level metrics are logged without sync_dist=True: "
                        f"{unsynced}")

    # A finite loss, on each rank and in metrics.csv.
    train = [_train_records(tmp_path / "dump_ddp", r) for r in (0, 1)]
    losses = [record["metrics"].get("train/loss_epoch") for rank in train for record in rank]
    assert losses and all(v is not None and math.isfinite(v) for v in losses), f"train/loss_epoch: {losses}"
    logged = [float(r["train/loss_epoch"]) for r in _metrics_csv(run) if r.get("train/loss_epoch")]
    assert logged and all(math.isfinite(v) for v in logged), f"train/loss_epoch in metrics.csv: {logged}"

    # The epoch of one process: as many training batches on each rank, as many optimiser steps.
    fit("dump_single", 1, *ONE_PROCESS, "--trainer.max_epochs", str(EPOCHS),
        "--run.root", str(tmp_path / "single"))
    single_steps = _steps(next((tmp_path / "single" / recipe).iterdir()))
    assert single_steps >= EPOCHS, f"one process made {single_steps} optimiser steps: nothing to compare"
    batches = {"1 process": [r["batches"] for r in _train_records(tmp_path / "dump_single", 0)],
               **{f"rank {r}": [record["batches"] for record in train[r]] for r in (0, 1)}}
    if len({tuple(b) for b in batches.values()}) != 1:
        problems.append(f"training batches per epoch differ with the world size: {batches}")
    saved_steps = _steps(run)
    if saved_steps != single_steps:
        problems.append(f"optimiser steps after {EPOCHS} epoch(s): {saved_steps} on 2 ranks, "
                        f"{single_steps} on 1 process")

    # Resume for one more epoch: the same run directory, the step count continued, metrics.csv appended.
    epochs_before = {r["epoch"] for r in _metrics_csv(run) if r.get("epoch")}
    launched = fit("dump_resume", 2, *DDP, "--trainer.max_epochs", str(EPOCHS + 1), "--run.root", str(runs),
                   "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    after = sorted(p.name for p in (runs / recipe).iterdir())
    if after != made:
        problems.append(f"the resumed run changed the run directories: {made} -> {after}")
    per_epoch = single_steps // EPOCHS
    if _steps(run) != saved_steps + per_epoch:
        problems.append(f"resumed from step {saved_steps}, one more epoch of {per_epoch} steps ended at step "
                        f"{_steps(run)}")
    epochs_after = {r["epoch"] for r in _metrics_csv(run) if r.get("epoch")}
    if not (epochs_before < epochs_after and str(EPOCHS) in epochs_after):
        problems.append(f"metrics.csv epochs: {sorted(epochs_before)} before the resume, "
                        f"{sorted(epochs_after)} after")
    problems += _rank_disagreements(tmp_path / "dump_resume")
    unsynced = sorted(set(_unsynced(launched)) - set(unsynced))
    if unsynced:
        problems.append(f"after the resume, also logged without sync_dist=True: {unsynced}")

    assert not problems, f"{recipe}/paper under torchrun:\n" + "\n".join(problems)
