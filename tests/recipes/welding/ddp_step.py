"""One welding training step on a fixed batch of 8, run by test_ddp.py as

    python ddp_step.py OUT --devices 1    # one process, the whole batch
    python ddp_step.py OUT --devices 2    # two gloo processes, each half of the batch

Each rank writes OUT/step_d{devices}_r{rank}.pt: the step's loss and every parameter's gradient as
the optimiser would see it (after DDP's all-reduce). The model, its initialisation and the batch are
the same in both runs; only the split of the batch over processes differs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from sensorium.recipes.welding.task import WeldingTask

BATCH = 8
TINY_NET = {
    "video": {"width": 16, "depth": 2}, "images": {"width": 16, "depth": 2}, "audio": {"width": 16, "depth": 2},
    "sensor": {"width": 16, "depth": 1, "patch": 8}, "fusion_dim": 32, "fusion_tokens": 2, "fusion_heads": 2,
    "embed_dim": 32,
}


def fixed_batch() -> dict[str, torch.Tensor]:
    """The batch format of WeldingDataset at tiny sizes, random but fixed; four classes, two each."""
    g = torch.Generator().manual_seed(1234)
    return {
        "video": torch.rand(BATCH, 4, 3, 32, 32, generator=g),
        "images": torch.rand(BATCH, 2, 3, 32, 32, generator=g),
        "audio": torch.randn(BATCH, 1, 16, 16, generator=g),
        "sensor": torch.randn(BATCH, 64, 6, generator=g),
        "present": torch.ones(BATCH, 4, dtype=torch.bool),
        "label": torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]),
    }


class HalfBatches(L.LightningDataModule):
    """Rank r of W gets rows r*B/W .. (r+1)*B/W of the fixed batch (its own shard, as a rank-aware
    sampler gives it)."""

    batch_size = BATCH

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        share = BATCH // world
        part = {k: v[rank * share:(rank + 1) * share] for k, v in fixed_batch().items()}
        return DataLoader([part], batch_size=None)


class Record(L.Callback):
    def __init__(self, out: Path, devices: int):
        self.out, self.devices, self.loss = out, devices, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = outputs["loss"].detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = {name: p.grad.detach().clone() for name, p in pl_module.named_parameters() if p.grad is not None}
        self.grads = grads

    def on_train_end(self, trainer, pl_module):
        torch.save({"loss": self.loss, "grads": self.grads},
                   self.out / f"step_d{self.devices}_r{trainer.global_rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    task = WeldingTask(net=TINY_NET, loss={"temperature": 0.1, "base_temperature": 0.1}, modality_dropout=0.0,
                       optim={"lr": 1e-3, "warmup_epochs": 0.0})
    record = Record(args.out, args.devices)
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        precision="32-true", max_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, callbacks=[record],
                        default_root_dir=str(args.out))
    trainer.fit(task, datamodule=HalfBatches())


if __name__ == "__main__":
    main()
