import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TOY, toy_cli

from sensorium.engine.checkpoint import load_checkpoint
from sensorium.errors import ConfigError



def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_run_directory(tmp_path, capsys):
    toy_cli(tmp_path, "--model.optim.base_lr", "0.02", epochs=2)
    run = tmp_path / "runs" / "toy" / "version_0"
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "export/model.safetensors", "export/config.json"):
        assert (run / name).is_file(), name
    # base_lr x batch 16 x accumulate 1 x world 1 / 256, printed and logged
    assert "lr = 0.00125 (base_lr 0.02 x batch 16 x accumulate 1 x world 1 / 256)" in capsys.readouterr().out
    rows = _rows(run / "metrics.csv")
    assert any(r.get("lr_resolved") and float(r["lr_resolved"]) == pytest.approx(0.00125) for r in rows)
    assert any(r.get("val/knn_accuracy") for r in rows) and any(r.get("lr-AdamW/pg1") for r in rows)
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")  # weights_only=True
    assert "state_dict" in best and best["hyper_parameters"]["optim"]["base_lr"] == 0.02
    # A second fit picks the next version.
    toy_cli(tmp_path, epochs=1)
    assert (tmp_path / "runs" / "toy" / "version_1" / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_in_the_same_run(tmp_path):
    toy_cli(tmp_path, epochs=1)
    run = tmp_path / "runs" / "toy" / "version_0"
    steps_after_one = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    toy_cli(tmp_path, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), epochs=3)
    assert not (tmp_path / "runs" / "toy" / "version_1").exists()
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3 * steps_after_one
    epochs = {r["epoch"] for r in _rows(run / "metrics.csv") if r.get("epoch")}
    assert epochs == {"0", "1", "2"}  # the resumed run appended to the same metrics.csv


def test_test_subcommand_on_a_run_keeps_its_metrics(tmp_path):
    toy_cli(tmp_path, epochs=1)
    run = tmp_path / "runs" / "toy" / "version_0"
    before = (run / "metrics.csv").read_text()
    toy_cli(tmp_path, "--ckpt_path", str(run / "checkpoints" / "best.ckpt"), subcommand="validate")
    assert (run / "metrics.csv").read_text() == before
    assert any(r.get("val/knn_accuracy") for r in _rows(run / "validate" / "metrics.csv"))


def test_tensorboard_and_wandb_offline_when_asked(tmp_path):
    toy_cli(tmp_path, "--run.loggers", "[csv, tensorboard, wandb]", epochs=1)
    run = tmp_path / "runs" / "toy" / "version_0"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*"))


def test_ddp_two_processes_on_cpu(tmp_path):
    """Two gloo processes: one run directory, distinct batches per rank, the full val set evaluated."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sensorium.cli", "fit", *TOY, "--trainer.strategy", "ddp", "--trainer.devices", "2",
           "--trainer.max_epochs", "2", "--run.root", str(tmp_path / "runs")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs" / "toy").iterdir())
    assert runs == ["version_0"]
    rows = _rows(tmp_path / "runs" / "toy" / "version_0" / "metrics.csv")
    assert {float(r["val/count"]) for r in rows if r.get("val/count")} == {24.0}
    last = load_checkpoint(tmp_path / "runs" / "toy" / "version_0" / "checkpoints" / "last.ckpt")
    # 48 train samples / batch 16: 3 batches per epoch on every rank, as on one process (the epoch
    # length does not depend on the world size), so 2 epochs are 6 optimiser steps.
    assert last["global_step"] == 6


def _rewrite_record(path: Path, **changes) -> Path:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["sensorium"].update(changes)
    out = path.with_name("edited.ckpt")
    torch.save(checkpoint, out)
    return out


def test_resume_refuses_another_recipes_checkpoint_before_any_step(tmp_path):
    toy_cli(tmp_path, epochs=1)
    last = tmp_path / "runs" / "toy" / "version_0" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["sensorium"] == {"recipe": "toy", "task": "ToyTask", "world_size": 1,
                                                  "lr_scales_with_world": False}
    other = _rewrite_record(last, recipe="cardiac", task="CardiacTask")
    with pytest.raises(ConfigError, match=r"edited.ckpt: was written by cardiac's CardiacTask; this run is toy's"):
        toy_cli(tmp_path, "--ckpt_path", str(other), epochs=2)


def test_resume_on_another_world_size_is_refused_when_the_lr_scales_with_it(tmp_path):
    toy_cli(tmp_path, "--model.optim.base_lr", "0.02", epochs=1)
    last = tmp_path / "runs" / "toy" / "version_0" / "checkpoints" / "last.ckpt"
    wider = _rewrite_record(last, world_size=2)
    with pytest.raises(ConfigError, match="written by a run on 2 rank.*resuming on 1 would change the lr"):
        toy_cli(tmp_path, "--ckpt_path", str(wider), "--model.optim.base_lr", "0.02", epochs=2)
    toy_cli(tmp_path, "--ckpt_path", str(wider), epochs=2)  # an absolute optim.lr resumes on any world size


def test_warmup_epochs_count_real_epochs_when_max_steps_ends_the_fit(tmp_path):
    # 48 training samples / batch 16: 3 optimiser steps an epoch. A fit ended by max_steps (12
    # steps, max_epochs -1) warms up over its first 3 steps, not over the whole run.
    toy_cli(tmp_path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "12", "--model.optim.warmup_epochs", "1",
            "--model.optim.min_lr", "0.0", epochs=None)
    rows = _rows(tmp_path / "runs" / "toy" / "version_0" / "metrics.csv")
    lrs = [float(r["lr-AdamW/pg1"]) for r in rows if r.get("lr-AdamW/pg1")]
    assert len(lrs) == 12
    assert lrs[0] < lrs[1] < lrs[2] and lrs[3] == pytest.approx(0.01, rel=0.02)  # the peak after one epoch
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.002  # then the cosine to min_lr
