"""The DiT's EMA moves once per optimizer step: with gradient accumulation, the batches that only add
to the gradients must not count as steps of the average."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from sensorium.recipes.doppler.dit_task import DopplerDiTTask


class RecordWeights(L.Callback):
    """The live DiT's weights after each batch, with the optimizer steps taken so far."""

    def __init__(self):
        super().__init__()
        self.after_batch: list[tuple[int, dict[str, torch.Tensor]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weights = {name: p.detach().clone() for name, p in pl_module.net.named_parameters()}
        self.after_batch.append((trainer.global_step, weights))


def _latent_batches(n: int, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = [{"mean": torch.randn(4, 8, 8, generator=g), "std": 0.1 * torch.ones(4, 8, 8),
              "label": torch.tensor(i % 2)} for i in range(n * batch_size)]
    return DataLoader(items, batch_size=batch_size)


def test_ema_updates_once_per_optimizer_step_under_gradient_accumulation():
    decay = 0.5  # large steps of the average, so an extra update would show
    task = DopplerDiTTask(net={"patch_size": 4, "dim": 32, "depth": 1, "num_heads": 2}, ema_decay=decay,
                          latent_shape=[4, 8, 8], users=[1, 2], optim={"lr": 1e-2, "warmup_epochs": 0})
    initial = {name: p.detach().clone() for name, p in task.net.named_parameters()}
    record = RecordWeights()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, accumulate_grad_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record])
    trainer.fit(task, train_dataloaders=_latent_batches(4))

    # 4 batches, accumulating 2: the optimizer steps after batches 2 and 4 only.
    assert [steps for steps, _ in record.after_batch] == [0, 1, 1, 2]
    stepped = [record.after_batch[1][1], record.after_batch[3][1]]
    moved = sum((stepped[1][n] - initial[n]).abs().sum() for n in initial)
    assert moved > 1e-3  # the weights moved, or every average would equal the initial weights

    # The EMA of the weights after each of the 2 optimizer steps, with the task's warm-up.
    expected = {name: p.clone() for name, p in initial.items()}
    for step, weights in enumerate(stepped, start=1):
        d = min(decay, (1 + step) / (10 + step))
        for name in expected:
            expected[name] = torch.lerp(expected[name], weights[name], 1 - d)
    assert int(task.ema_steps) == 2
    for name, p in task.ema.named_parameters():
        torch.testing.assert_close(p, expected[name], msg=name)
