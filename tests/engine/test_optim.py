import math

import pytest
import torch
from torch import nn

from sensorium.engine.optim import OptimConfig, build_optimizer, param_groups, resolve_lr, warmup_cosine


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
