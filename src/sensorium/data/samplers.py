"""Class-balanced batches for contrastive learning, rank-aware under DDP.

The welding note's sampler returned single-class batches and kept the SupCon loss at log(B-1)
for days. Here every batch holds `classes_per_batch` distinct classes with exactly
`samples_per_class` (m >= 2) samples each, so every anchor has positives and negatives, whatever
the class imbalance (the real welding dataset ranges from 160 to 819 samples per class).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from sensorium.errors import ConfigError, DataError


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: P classes x m samples.

    Classes are visited in shuffled rounds (each class once per round), so small classes are
    drawn as often as large ones; within a class, indices are consumed from a shuffled cycle
    (every sample is used before any is reused). The global sequence of batches is a function of
    (seed, epoch) only; rank r of `num_replicas` takes batches r, r + W, r + 2W, ..., so ranks get
    distinct batches and together exactly the single-process sequence.

    An epoch has `batches_per_epoch` batches on EVERY rank (default: len(labels) // batch_size, one
    process's epoch), so the number of optimiser steps per epoch does not change with the world size.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, classes_per_batch: int, samples_per_class: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, batches_per_epoch: int | None = None):
        labels = np.asarray(labels, dtype=np.int64)
        if samples_per_class < 2:
            raise ConfigError("samples_per_class", f"must be >= 2, got {samples_per_class}: a contrastive batch "
                                                   "needs positive pairs")
        if not 0 <= rank < num_replicas:
            raise ConfigError("rank", f"{rank} is outside [0, {num_replicas})")
        classes, counts = np.unique(labels, return_counts=True)
        small = {int(c): int(n) for c, n in zip(classes, counts) if n < samples_per_class}
        if small:
            raise ConfigError("samples_per_class", f"classes with fewer than samples_per_class={samples_per_class} "
                                                   f"samples (class: count) {small}; lower samples_per_class or "
                                                   "drop those classes")
        if not 2 <= classes_per_batch <= len(classes):
            raise ConfigError("classes_per_batch", f"{classes_per_batch} must be in [2, {len(classes)}] "
                                                   "(the number of classes present)")
        self.labels = labels
        self.classes = classes
        self.members = [np.flatnonzero(labels == c) for c in classes]
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError("batches_per_epoch", f"must be >= 1 (or null for one pass), got {batches_per_epoch}")
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // self.batch_size)

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> ClassBalancedBatchSampler:
        # Lightning advances epochs by calling `loader.batch_sampler.sampler.set_epoch(epoch)`
        # (the place a DistributedSampler sits inside a BatchSampler); this batch sampler is its
        # own sampler, so each epoch (and a resumed run) gets its own batches.
        return self

    def __len__(self) -> int:
        return self.batches_per_epoch

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of this epoch, in order (batches_per_epoch x num_replicas)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        class_rounds = _Rounds(range(len(self.classes)), rng)
        member_rounds = [_Rounds(members.tolist(), rng) for members in self.members]
        batches = []
        for _ in range(self.batches_per_epoch * self.num_replicas):
            batch = []
            for c in class_rounds.take(self.classes_per_batch):
                batch.extend(member_rounds[c].take(self.samples_per_class))
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank::self.num_replicas]


class _Rounds:
    """Visits `items` in shuffled rounds; `take(k)` returns k distinct items. When a round runs
    out mid-take, the next round completes it with items not already taken; the skipped ones go
    to the end of that round, so every item is still visited once per round."""

    def __init__(self, items, rng: np.random.Generator):
        self.items = list(items)
        self.rng = rng
        self.pool: list = []

    def take(self, k: int) -> list:
        out, self.pool = self.pool[:k], self.pool[k:]
        if len(out) < k:
            fresh = [self.items[i] for i in self.rng.permutation(len(self.items))]
            unused = [x for x in fresh if x not in out]
            need = k - len(out)
            out, self.pool = out + unused[:need], unused[need:] + [x for x in fresh if x in out]
        return out


class EpochSampler(Sampler[int]):
    """Shuffled training samples for one rank: `batches_per_epoch x batch_size` per rank at any
    world size, so an epoch is the same number of optimiser steps on 1 or 64 ranks.

    The global order of an epoch is a function of (seed, epoch) only: shuffled passes over the
    dataset, concatenated until every rank's share is filled; global step s takes the next
    `world x batch_size` samples and rank r its r-th slice of them, so the ranks of one step hold
    distinct samples. On one rank with the default length this is a plain shuffled epoch with
    the last incomplete batch dropped. Lightning calls `set_epoch` (a resumed run gets the
    epoch's own order).
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 batches_per_epoch: int | None = None, where: object = "data.root"):
        if batch_size < 1:
            raise ConfigError("data.batch_size", f"must be >= 1, got {batch_size}")
        if length < batch_size * world:
            raise DataError(where, f"the train split has {length} sample(s), which do not fill one batch of "
                                   f"data.batch_size={batch_size} on each of {world} rank(s) (the ranks of a step "
                                   f"take distinct samples); lower data.batch_size or use fewer devices")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError("data.batches_per_epoch", f"must be >= 1 (or null for one pass), got {batches_per_epoch}")
        self.length, self.batch_size, self.rank, self.world, self.seed = length, batch_size, rank, world, seed
        self.batches_per_epoch = batches_per_epoch or length // batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        # torch.randperm seeded with seed + epoch, as DistributedSampler draws: on one rank the first
        # pass is exactly the order a DistributedSampler(shuffle=True, drop_last=True) gave.
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        needed = len(self) * self.world
        passes = -(-needed // self.length)
        order = torch.cat([torch.randperm(self.length, generator=generator) for _ in range(passes)])[:needed].numpy()
        # (steps, world, batch) -> this rank's (steps, batch), flattened in step order
        mine = order.reshape(self.batches_per_epoch, self.world, self.batch_size)[:, self.rank]
        yield from mine.reshape(-1).tolist()
