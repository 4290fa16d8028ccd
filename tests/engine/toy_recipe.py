"""A toy contrastive recipe for engine tests: Gaussian class blobs embedded by a small MLP.

It exercises the same engine paths as the real recipes (LightningCLI, class-balanced sampler,
gathering across ranks, k-NN validation, checkpoints, export, doctor) in a fraction of a second,
and has switches that trigger each doctor check.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sensorium.data.datamodule import SensoriumDataModule
from sensorium.data.samplers import ClassBalancedBatchSampler
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.eval.knn import knn_predict
from sensorium.losses.contrastive import supcon_loss


class _Blobs(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"x": x, "label": y, "index": torch.tensor(i)}


class ToyDataModule(SensoriumDataModule):
    def __init__(self, num_classes: int = 4, per_class: int = 24, dim: int = 8, classes_per_batch: int = 4,
                 samples_per_class: int = 4, single_class_batches: bool = False, leak_test_into_train: bool = False,
                 validate_on_test: bool = False, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = classes_per_batch * samples_per_class
        self.eval_batch_size, self.collate_fn = 16, None

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        g = torch.Generator().manual_seed(h.seed)
        centers = 3 * torch.randn(h.num_classes, h.dim, generator=g)
        labels = torch.arange(h.num_classes).repeat_interleave(h.per_class)
        x = centers[labels] + torch.randn(len(labels), h.dim, generator=g)
        order = torch.randperm(len(labels), generator=g)
        x, labels = x[order], labels[order]
        n = len(labels)
        self.parts = {"train": (x[: n // 2], labels[: n // 2]), "val": (x[n // 2: 3 * n // 4], labels[n // 2: 3 * n // 4]),
                      "test": (x[3 * n // 4:], labels[3 * n // 4:])}
        if h.leak_test_into_train:
            tx, ty = self.parts["train"]
            self.parts["train"] = (torch.cat([tx, self.parts["test"][0][:2]]), torch.cat([ty, self.parts["test"][1][:2]]))

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        return {split: {f"{split}-{i}": str(hash(tuple(row.tolist()))) for i, row in enumerate(x)}
                for split, (x, _) in self.parts.items()}

    def train_dataloader(self):
        x, y = self.parts["train"]
        h = self.hparams
        if h.single_class_batches:  # the welding note's bug: every batch drawn from one class
            batches = [members[i:i + h.samples_per_class].tolist() for c in range(h.num_classes)
                       for members in [torch.nonzero(y == c).flatten()]
                       for i in range(0, len(members) - h.samples_per_class + 1, h.samples_per_class)]
            return DataLoader(_Blobs(x, y), batch_sampler=batches)
        sampler = ClassBalancedBatchSampler(y.numpy(), h.classes_per_batch, h.samples_per_class,
                                            self.trainer.world_size, self.trainer.global_rank, seed=h.seed)
        return DataLoader(_Blobs(x, y), batch_sampler=sampler)

    def _eval_loader(self, split):
        return self.eval_loader(_Blobs(*self.parts[split]), split)

    def val_dataloader(self):
        # validate_on_test: the welding note's leak, validation (and so checkpoint choice) on TEST
        return [self._eval_loader("train"), self._eval_loader("test" if self.hparams.validate_on_test else "val")]

    def test_dataloader(self):
        return [self._eval_loader("train"), self._eval_loader("test")]


class ToyTask(SensoriumTask):
    recipe = "toy"
    monitor = "val/knn_accuracy"
    monitor_mode = "max"
    contrastive = True

    def __init__(self, dim: int = 8, hidden: int = 16, unused_layer: bool = False, nan_loss: bool = False,
                 tiny_term_weight: float = 0.0, optim: OptimConfig | dict | None = None):
        super().__init__(optim)
        self.save_config(dim=dim, hidden=hidden, unused_layer=unused_layer, nan_loss=nan_loss,
                         tiny_term_weight=tiny_term_weight, optim=self.optim)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.unused = nn.Linear(hidden, hidden) if unused_layer else None
        self.nan_loss = nan_loss
        self.tiny_term_weight = tiny_term_weight
        self._parts = {}

    def forward(self, x):
        return F.normalize(self.net(x), dim=-1)

    def training_losses(self, batch):
        z = self.gather(self(batch["x"]), sync_grads=True)
        labels = self.gather(batch["label"])
        terms = {"supcon": supcon_loss(z[:, None], labels, temperature=0.2, base_temperature=0.2)}
        if self.nan_loss:
            terms["supcon"] = terms["supcon"] * float("nan")
        if self.tiny_term_weight:
            terms["tiny"] = self.tiny_term_weight * z.pow(2).mean()
        return terms

    def on_validation_epoch_start(self):
        self._parts = {}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._parts.setdefault(dataloader_idx, []).append({"z": self(batch["x"]), "label": batch["label"]})

    def on_validation_epoch_end(self):
        bank, query = self.gather_eval(self._parts.get(0, [])), self.gather_eval(self._parts.get(1, []))
        if bank and query:
            pred = knn_predict(bank["z"], bank["label"], query["z"], k=5)
            self.log("val/knn_accuracy", (pred == query["label"]).float().mean(), sync_dist=True)
            self.log("val/count", float(len(query["label"])), sync_dist=True)


class SlowSteps(Callback):
    """A loaded machine, simulated: every training step takes `seconds` longer. A clock-free fit
    must end at the same weights (tests/recipes/doppler/test_clock_free.py)."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
