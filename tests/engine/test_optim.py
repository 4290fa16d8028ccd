import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from sensorium.config import as_config, to_plain
from sensorium.engine.optim import (
    OptimConfig,
    UnfreezeStage,
    build_optimizer,
    param_groups,
    resolve_lr,
    set_unfrozen,
    warmup_cosine,
)
from sensorium.errors import ConfigError


def test_warmup_then_cosine_to_min_lr():
    lrs = [warmup_cosine(s, warmup_steps=10, total_steps=100, peak_lr=1.0, min_lr=0.01) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)  # end of warmup reaches the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # linear rise
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay
    assert lrs[100] == pytest.approx(0.01)
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_base_lr_scales_with_effective_batch():
    config = OptimConfig(lr=123.0, base_lr=1.5e-4)
    assert resolve_lr(config, batch_size=8, accumulate=2, world_size=4) == pytest.approx(1.5e-4 * 64 / 256)
    assert resolve_lr(OptimConfig(lr=0.3), 8, 2, 4) == 0.3  # no base_lr: the absolute lr


class _WithToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.token = nn.Parameter(torch.zeros(1, 2, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def no_weight_decay(self):
        return {"token"}


def test_no_weight_decay_on_biases_norms_and_tokens():
    module = _WithToken()
    decay, no_decay = param_groups(module, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(module.linear.weight)]
    expected = {id(module.linear.bias), id(module.norm.weight), id(module.norm.bias), id(module.token)}
    assert {id(p) for p in no_decay["params"]} == expected  # frozen parameters are left out


def test_scheduler_steps_per_optimiser_step():
    module = nn.Linear(2, 2)
    config = OptimConfig(lr=1.0, warmup_epochs=1, min_lr=0.0)
    optimizer, scheduler = build_optimizer(module, config, peak_lr=1.0, total_steps=20, steps_per_epoch=5)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.2) and seen[4] == pytest.approx(1.0)
    assert seen[-1] < 0.02


def test_time_budget_ends_the_cosine_first():
    """With a time budget, the decay follows whichever is further along: steps or the clock."""
    config = OptimConfig(lr=1.0, warmup_epochs=1, min_lr=0.0)
    clock = {"fraction": 0.0}
    optimizer, scheduler = build_optimizer(nn.Linear(2, 2), config, peak_lr=1.0, total_steps=100, steps_per_epoch=10,
                                           time_fraction=lambda: clock["fraction"])
    lrs = []
    for step in range(30):
        clock["fraction"] = 0.0 if step < 20 else 1.0  # the budget runs out at step 20
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    untimed = [warmup_cosine(s, 10, 100, 1.0, 0.0) for s in range(21)]
    assert lrs[:21] == pytest.approx(untimed)  # warmup and early decay: by step while time is left
    assert lrs[21:] == pytest.approx([0.0] * 9)  # budget spent: the schedule is at its end
    assert lrs[20] > 0.9


def test_fit_with_max_time_sizes_the_decay_by_the_clock(tmp_path):
    """A Trainer with max_time hands the task a time fraction: the lr decays although few of the
    many planned steps ran."""
    import lightning as L
    from torch.utils.data import DataLoader

    from sensorium.engine.task import SensoriumTask

    class Tiny(SensoriumTask):
        recipe = "test"

        def __init__(self):
            super().__init__(OptimConfig(lr=1.0, warmup_epochs=0, min_lr=0.0))
            self.net = nn.Linear(2, 1)
            self.lrs = []

        def training_losses(self, batch):
            self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
            import time
            time.sleep(0.05)  # 20 steps use up the 1 s budget
            return {"mse": self.net(batch["x"]).square().mean()}

    data = DataLoader([{"x": x} for x in torch.randn(64, 2)], batch_size=1)
    task = Tiny()
    trainer = L.Trainer(max_epochs=100, max_time={"seconds": 1}, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, data)
    assert trainer.estimated_stepping_batches == 6400 and 3 <= len(task.lrs) < 100
    assert task.lrs[-1] < 0.1 * task.lrs[0]  # step-sized, it would still be ~1.0


# --- staged unfreezing -------------------------------------------------------------------------------
class _Staged(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 4)
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 4)).requires_grad_(False)


def test_unfreeze_stages_get_groups_of_their_own_with_their_lr_multiplier():
    module = _Staged()
    stages = [UnfreezeStage(epoch=2, modules=["encoder.2"], lr_mult=0.5),
              UnfreezeStage(epoch=5, modules=["encoder"], lr_mult=0.1)]
    groups = param_groups(module, 0.05, stages)
    ids = [[id(p) for p in g["params"]] for g in groups]
    assert ids[:2] == [[id(module.head.weight)], [id(module.head.bias)]]  # the main groups, as without stages
    # Frozen now, but in the optimiser from the start; the longest path wins (encoder.2 -> stage 0).
    assert ids[2:] == [[id(module.encoder[2].weight)], [id(module.encoder[2].bias)],
                       [id(module.encoder[0].weight)],
                       [id(module.encoder[0].bias), id(module.encoder[1].weight), id(module.encoder[1].bias)]]
    assert [g.get("lr_mult") for g in groups] == [None, None, 0.5, 0.5, 0.1, 0.1]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] * 3
    assert len(param_groups(module, 0.05)) == 2  # no stages: the two groups of before

    optimizer, scheduler = build_optimizer(module, OptimConfig(lr=1.0, warmup_epochs=0, min_lr=0.0, unfreeze=stages),
                                           peak_lr=2.0, total_steps=10, steps_per_epoch=2)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[0] == pytest.approx(warmup_cosine(3, 0, 10, 2.0, 0.0)) and lrs[0] < 2.0
    assert lrs == pytest.approx([lrs[0], lrs[0], 0.5 * lrs[0], 0.5 * lrs[0], 0.1 * lrs[0], 0.1 * lrs[0]])


def test_set_unfrozen_follows_the_epoch_and_reports_changes():
    module = _Staged()
    module.encoder.requires_grad_(True)  # trainable when built: still frozen until its stage
    stages = [UnfreezeStage(epoch=1, modules=["encoder.0"]), UnfreezeStage(epoch=3, modules=["encoder"])]
    assert set_unfrozen(module, stages, 0) == [0, 1]
    assert not any(p.requires_grad for p in module.encoder.parameters()) and module.head.weight.requires_grad
    assert set_unfrozen(module, stages, 1) == [0]
    assert module.encoder[0].weight.requires_grad and not module.encoder[2].weight.requires_grad
    assert set_unfrozen(module, stages, 2) == []
    assert set_unfrozen(module, stages, 7) == [1]  # a resume past both stages
    assert all(p.requires_grad for p in module.parameters())


def test_unfreeze_config_is_checked_and_round_trips_as_plain_data():
    config = as_config(OptimConfig, {"lr": 1e-3, "unfreeze": [{"epoch": 3, "modules": ["net.encoders.video"],
                                                              "lr_mult": 0.1}]})
    assert config.unfreeze == [UnfreezeStage(3, ["net.encoders.video"], 0.1)]
    assert as_config(OptimConfig, to_plain(config)) == config  # checkpoints hold plain dicts
    assert OptimConfig().unfreeze == []
    with pytest.raises(ConfigError, match="lr_mult"):
        UnfreezeStage(1, ["x"], lr_mult=0.0)
    with pytest.raises(ConfigError, match="epoch"):
        UnfreezeStage(-1, ["x"])
    with pytest.raises(ConfigError, match="'encoder.9' names no parameter of _Staged"):
        param_groups(_Staged(), 0.05, [UnfreezeStage(1, ["encoder.9"])])


def test_unfreezing_a_frozen_pretrained_encoder_lets_gradients_in(tmp_path):
    """A frozen PretrainedEncoder runs its backbone without autograd: unfreezing part of it must
    switch that off, or the stage would train nothing."""
    from transformers import Dinov2Config, Dinov2Model

    from sensorium.models.encoders import PretrainedEncoder

    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             image_size=16, patch_size=8)).save_pretrained(tmp_path / "dinov2")
    module = nn.ModuleDict({"images": PretrainedEncoder(tmp_path / "dinov2", "images", freeze=True)}).train()
    stages = [UnfreezeStage(epoch=1, modules=["images.backbone.encoder.layer.1"], lr_mult=0.1)]
    x = torch.rand(2, 3, 3, 16, 16)

    set_unfrozen(module, stages, 0)
    assert module["images"].freeze and not module["images"].backbone.training
    assert not module["images"](x).requires_grad

    set_unfrozen(module, stages, 1)
    assert not module["images"].freeze and module["images"].backbone.training
    module["images"](x).sum().backward()
    trained = {n for n, p in module.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("images.backbone.encoder.layer.1.") for n in trained)


class _Recorder(L.Callback):
    def __init__(self):
        self.rows = []  # (epoch, first layer's weight, last layer's weight, lr of every group)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append((trainer.current_epoch, pl_module.net[0].weight.detach().clone(),
                          pl_module.net[2].weight.detach().clone(),
                          [g["lr"] for g in trainer.optimizers[0].param_groups]))


def test_fit_trains_a_stage_from_its_epoch_at_its_share_of_the_lr(tmp_path):
    """The toy recipe with its first layer unfrozen at epoch 1 at lr x 0.1: unchanged through epoch
    0, trained from epoch 1 at a tenth of the schedule's lr; the doctor does not take the frozen
    layer for one that gets no gradient."""
    from toy_recipe import ToyDataModule, ToyTask

    from sensorium.engine.doctor import Doctor

    task = ToyTask(optim={"lr": 0.01, "warmup_epochs": 0.5, "min_lr": 0.0,
                          "unfreeze": [{"epoch": 1, "modules": ["net.0"], "lr_mult": 0.1}]})
    initial = task.net[0].weight.detach().clone()
    recorder = _Recorder()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[recorder, Doctor()], default_root_dir=tmp_path)
    trainer.fit(task, datamodule=ToyDataModule())
    epoch = [row[0] for row in recorder.rows]
    assert epoch == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # 3 steps an epoch
    first, last = [row[1] for row in recorder.rows], [row[2] for row in recorder.rows]
    assert all(torch.equal(w, initial) for w in first[:4])  # unchanged up to the start of epoch 1
    assert not torch.equal(first[5], first[4])  # trained from epoch 1 on
    assert not torch.equal(last[1], last[0])  # the rest trained from the start
    for _, _, _, lrs in recorder.rows:
        assert len(lrs) == 4 and lrs[2] == pytest.approx(0.1 * lrs[0]) and lrs[3] == pytest.approx(0.1 * lrs[0])
    assert recorder.rows[4][3][0] > 0  # the schedule is mid-way, not at its end, when the stage starts


def test_unfreeze_under_plain_ddp_is_refused(tmp_path):
    from helpers import TOY

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    stage = '[{"epoch": 1, "modules": ["net.0"], "lr_mult": 0.1}]'
    cmd = [sys.executable, "-m", "sensorium.cli", "fit", *TOY, "--trainer.strategy", "ddp", "--trainer.devices", "1",
           "--trainer.max_epochs", "1", "--run.root", str(tmp_path / "runs"), "--model.optim.unfreeze", stage]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert result.returncode != 0
    assert "optim.unfreeze under DDP needs `ddp_find_unused_parameters_true`" in result.stderr


class SameWeightsAcrossRanks(L.Callback):
    """For the DDP test below (imported by its ranks): the stage's layer was trained, and every
    rank ends with the same weights (its gradients were averaged across ranks)."""

    def setup(self, trainer, pl_module, stage):
        # Before the task's own setup: the layer is frozen when built, as a pretrained backbone is.
        pl_module.net[0].requires_grad_(False)

    def on_fit_start(self, trainer, pl_module):
        self.initial = pl_module.net[0].weight.detach().clone()

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        everyone = pl_module.all_gather(flat)  # (world, P)
        assert (everyone == everyone[0]).all(), "ranks drifted apart: a stage's gradients were not synchronised"
        assert not torch.equal(pl_module.net[0].weight, self.initial), "the unfrozen stage did not train"
        if trainer.is_global_zero:
            print("[test] same weights on every rank")


def test_unfreeze_under_ddp_keeps_ranks_in_step(tmp_path):
    from helpers import TOY

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    stage = '[{"epoch": 1, "modules": ["net.0"], "lr_mult": 0.5}]'
    cmd = [sys.executable, "-m", "sensorium.cli", "fit", *TOY, "--trainer.strategy", "ddp_find_unused_parameters_true",
           "--trainer.devices", "2", "--trainer.max_epochs", "2", "--run.root", str(tmp_path / "runs"),
           "--model.optim.unfreeze", stage, "--trainer.callbacks+=test_optim.SameWeightsAcrossRanks"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[test] same weights on every rank" in result.stdout + result.stderr
    assert "epoch 1: training net.0 at lr x 0.5" in result.stdout + result.stderr
