"""The rank-aware DataModule every recipe extends, and the typed data contract it hands its task.

Under torchrun / SLURM each rank builds its own loaders; the rules that make a run mean the same
on 1 or 64 ranks live here once:

- **Training** draws the same number of samples per rank at any world size: an epoch is
  `batches_per_epoch` optimiser-side batches on every rank (default: one process's epoch,
  `len(train) // batch_size`), so schedules, validation cadence and early stopping do not change
  with the number of GPUs. The ranks' batches of one step are distinct samples
  (`sensorium.data.samplers.EpochSampler`).
- **A split must fill one batch**: checked when the loader is built, with the split, the counts,
  the world size and the option to change in the message.
- **Evaluation** is sharded in contiguous blocks (gathered in rank order, results come back in
  dataset order) with the same number of batches on every rank, so a collective call in a step
  can never wait for a rank that has finished.
- **Split sizes** are logged once, on global rank zero.

`data_spec()` returns the recipe's `DataSpec`: what its task needs to know about the data (classes,
users, channels, structures, encoders, latent statistics). The engine hands it to the task after
Lightning has set the datamodule up (`SensoriumTask.setup` -> `configure_data`), so no task probes
its datamodule's attributes by name or calls `setup()` on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sensorium.data.bad_samples import collate_skipping
from sensorium.data.samplers import EpochSampler
from sensorium.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    """Base of each recipe's data contract (a frozen dataclass of plain values)."""


def eval_batches(length: int, batch_size: int, rank: int, world: int, split: str = "evaluation") -> list[list[int]]:
    """This rank's evaluation batches: a contiguous block of the dataset cut into as many batches as
    the largest block needs, so every rank holds the same number of batches (the blocks differ by at
    most one sample; batches within a block differ by at most one sample)."""
    if batch_size < 1:
        raise ConfigError("data.eval_batch_size", f"must be >= 1, got {batch_size}")
    if length < world:
        raise ConfigError("trainer.devices", f"the {split} split has {length} sample(s), fewer than the {world} "
                                             "ranks: every rank needs at least one; use fewer devices")
    blocks = np.array_split(np.arange(length), world)
    count = -(-len(blocks[0]) // batch_size)  # the first block is the largest
    if any(len(b) < count for b in blocks):
        raise ConfigError("data.eval_batch_size", f"{batch_size} cannot give every rank the same number of {split} "
                                                  f"batches ({length} samples on {world} ranks); raise it to 2 or more")
    return [part.tolist() for part in np.array_split(blocks[rank], count)]


def shard_groups(groups: Sequence[Sequence[int]], rank: int, world: int) -> list[list[int]]:
    """This rank's share of evaluation batches whose composition matters (retrieval batches: every
    query is ranked against its batch). Whole groups go round-robin while every rank can take one;
    the samples of the remaining groups (fewer than `world`, one round more when they hold fewer
    samples than ranks) are split into one batch per rank, so every sample is still evaluated and every rank holds the same number of batches."""
    groups = [list(g) for g in groups]
    whole = len(groups) // world * world
    rest = [i for g in groups[whole:] for i in g]
    while rest and len(rest) < world and whole > 0:  # too few to share: one more round of groups joins them
        whole -= world
        rest = [i for g in groups[whole:] for i in g]
    mine = groups[rank:whole:world]
    if rest:
        if len(rest) < world:
            raise ConfigError("trainer.devices", f"{len(rest)} evaluation sample(s) left after whole batches cannot "
                                                 f"give each of {world} ranks one")
        mine.append(np.array_split(np.asarray(rest), world)[rank].tolist())
    return mine


class SensoriumDataModule(L.LightningDataModule):
    """Rank-aware loaders and the data contract (see the module docstring).

    A recipe's DataModule sets the fields below in its `__init__`, reads its data in `setup`, and
    builds its loaders with `train_loader` / `eval_loader` / `grouped_eval_loader`.
    """

    batch_size: int
    """Samples per training batch and rank."""
    eval_batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    """Seeds the training order (with the epoch)."""
    batches_per_epoch: int | None = None
    """Training batches per epoch and rank; None: one process's epoch (len(train) // batch_size)."""
    collate_fn: Callable | None = staticmethod(collate_skipping)
    where: Any = "data.root"
    """What messages about this data name: its root directory, or its index file."""

    def data_spec(self) -> DataSpec:
        """What the task needs to know about this data; called after `setup`. The base spec is
        empty: a recipe whose task reads nothing from its data keeps it."""
        return DataSpec()

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {sample id: content hash}} for the doctor's overlap check; {} when not known."""
        return {}

    def split_sizes(self) -> dict[str, int]:
        """Samples per split as the loaders will read them, after `setup` ({} where unknown)."""
        return {}

    def attach_frozen_encoders(self, encoders: Mapping[str, nn.Module]) -> tuple[str, ...]:
        """Offered by the task in its `setup`: encoders ({name: module}) whose outputs cannot change
        during the run. A datamodule with a feature cache (`sensorium.data.feature_cache`) computes
        their outputs once, when its loaders are first built, and returns the names whose batches
        will carry outputs instead of inputs. Default: none (the task runs every encoder)."""
        return ()

    def check_fits(self, stage: str, accumulate_grad_batches: int = 1) -> None:
        """Fail before any step when the splits cannot serve this world size: the train split must
        fill one batch on every rank, an epoch must hold at least one optimiser step, and every
        rank needs at least one evaluation sample."""
        rank, world = self.rank_and_world
        sizes = self.split_sizes()
        if stage == "fit" and "train" in sizes:
            sampler = EpochSampler(sizes["train"], self.batch_size, rank=rank, world=world,
                                   batches_per_epoch=self.batches_per_epoch, where=self.where)
            if sampler.batches_per_epoch < accumulate_grad_batches:
                raise ConfigError("trainer.accumulate_grad_batches",
                                  f"{accumulate_grad_batches} is more than the {sampler.batches_per_epoch} training "
                                  f"batches of an epoch on each rank: no optimiser step would complete; lower it or "
                                  "raise data.batches_per_epoch")
        for split, n in sizes.items():
            # A fit reads train and val; the test split is checked when a test runs.
            if split == "train" or (stage == "fit" and split == "test"):
                continue
            if 0 < n < world:
                raise ConfigError("trainer.devices", f"the {split} split has {n} sample(s), fewer than the {world} "
                                                     "ranks: every rank needs at least one; use fewer devices")

    # --- ranks ------------------------------------------------------------------------------------
    @property
    def rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def log_splits(self, what: str, counts: dict[str, int], detail: str = "") -> None:
        """One line with the split sizes, on global rank zero."""
        sizes = ", ".join(f"{split} {n}" for split, n in counts.items())
        log.info(f"{what}: {sizes}{detail}")

    # --- loaders ----------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, collate_fn: Callable | None, split: str, **kwargs) -> DataLoader:
        loader = DataLoader(dataset, num_workers=self.num_workers, collate_fn=collate_fn or self.collate_fn,
                            persistent_workers=self.num_workers > 0, **kwargs)
        loader.split = split  # which split it reads: the engine refuses validation on test (`check_val_reads`)
        return loader

    def train_loader(self, dataset: Dataset, collate_fn: Callable | None = None) -> DataLoader:
        """Shuffled training batches, `batches_per_epoch` per rank at any world size."""
        rank, world = self.rank_and_world
        sampler = EpochSampler(len(dataset), self.batch_size, rank=rank, world=world, seed=self.seed,
                               batches_per_epoch=self.batches_per_epoch, where=self.where)
        # drop_last: every step holds exactly batch_size samples on every rank (gathered losses
        # need equal shapes across ranks); the sampler yields whole batches only anyway.
        return self._loader(dataset, collate_fn, "train", sampler=sampler, batch_size=self.batch_size, drop_last=True)

    def eval_loader(self, dataset: Dataset, split: str, collate_fn: Callable | None = None,
                    batch_size: int | None = None) -> DataLoader:
        """This rank's contiguous block of `dataset`, in the same number of batches on every rank."""
        rank, world = self.rank_and_world
        if len(dataset) == 0:
            raise DataError(self.where, f"the {split} split is empty")
        batches = eval_batches(len(dataset), batch_size or self.eval_batch_size, rank, world, split)
        return self._loader(dataset, collate_fn, split, batch_sampler=batches)

    def grouped_eval_loader(self, dataset: Dataset, split: str, groups: Sequence[Sequence[int]],
                            collate_fn: Callable | None = None) -> DataLoader:
        """Evaluation batches of fixed composition (see `shard_groups`)."""
        rank, world = self.rank_and_world
        return self._loader(dataset, collate_fn, split, batch_sampler=shard_groups(groups, rank, world))


def check_val_reads(loaders: DataLoader | Sequence[DataLoader] | None, where: Any) -> None:
    """Refuse validation loaders that read the test split. Validation chooses the best checkpoint,
    early stopping and any setting; a test sample among them would let test choose, and the
    reported result would no longer be held out. Loaders built by `SensoriumDataModule` carry the
    split they read (`loader.split`: "val", or "train" for a k-NN bank); others are not checked."""
    if loaders is None:
        return
    for loader in [loaders] if isinstance(loaders, DataLoader) else loaders:
        split = getattr(loader, "split", None)
        if isinstance(split, str) and "test" in split.split():
            raise ConfigError(where, f"a validation loader reads the {split!r} split: validation chooses the "
                                     "checkpoint and early stopping, so it may read train and val only, never test")
