"""The rgbpc recipe's splits and loaders: the episodes of the layout with their feature packs
(reader.py), read as `RgbpcSamples`, on the shared rank-aware DataModule base; and `RgbpcDataSpec`,
what the tasks read from their data.

Episodes are split by episode (never by window) into train / val / test per task, deterministically
for `split_seed`; `test` is the held-out set of the evaluation. Training reads every pack window of
the training episodes; validation, the val episodes' windows in retrieval batches; the test, the
steps of the action head's few training episodes and of the held-out episodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.datamodule import DataSpec, SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.data.splits import stratified_split
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.rgbpc.reader import (
    Anchor,
    Episode,
    Item,
    PointInput,
    RgbpcSamples,
    attach_packs,
    find_episodes,
    read_episode,
    step_items,
    window_items,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RgbpcDataSpec(DataSpec):
    """What the rgbpc tasks read from their data."""

    channels: dict[str, int]
    """Feature width of each encoder's packs, in the model's order."""
    temporal: bool
    point_input: str
    images: bool
    """Training samples carry their anchor frame (the distillation student's input)."""
    eval_windows: int
    """Samples per retrieval batch (every query is ranked against its batch's points)."""
    eval_points: int
    held_out_episodes: int
    features: str
    """The packs' root, for messages."""
    transforms: dict[str, dict]
    """Each encoder's `GridTransform` (as `to_dict`): where any pixel uv lands on its grid (the
    distillation's dense targets sample the teacher at every cell of the student's grid)."""


class RgbpcDataModule(SensoriumDataModule):
    def __init__(self, root: str, features: str | None = None, encoders: list[str] | None = None, points: int = 64,
                 batch_size: int = 32, anchor: Anchor = "middle", temporal: bool = False,
                 point_input: PointInput = "pc_feat", images: bool = False, test_fraction: float = 0.25,
                 val_fraction: float = 0.1, split_seed: int = 0, eval_windows: int = 16, eval_points: int = 32,
                 action_points: int = 128, action_train_episodes: int | None = 12, actions: bool = True,
                 batches_per_epoch: int | None = None, num_workers: int = 0, on_bad_sample: OnBadSample = "error"):
        """
        Args:
            root: dataset root (ROOT/rgb, ROOT/pc, ROOT/actions).
            features: root of the feature packs; default ROOT/features.
            encoders: the packs to read (FEATURES/<encoder>/...), in the model's order.
            points: K points per training sample.
            anchor: which frame of a window is aligned (training samples).
            temporal: read the whole window (the model pools over its T frames at each point).
            point_input: pc_feat (the point encoder's features) or xyzrgb (raw points: data without one).
            images: also read each training sample's anchor frame (the distillation student's input).
            test_fraction, val_fraction: episodes of each task held out for the evaluation / validation.
            eval_windows, eval_points: a retrieval batch holds eval_windows samples of eval_points points
                each: the candidates every query is ranked against (chance 1 / (eval_windows * eval_points)).
            action_points: points per step fed to the action head in the test.
            action_train_episodes: training episodes the action head is fitted on (a probe: few);
                None: every training episode.
            actions: read ROOT/actions (the action-head test needs them; alignment does not: data
                converted from the note has none, set false there).
            batches_per_epoch: training batches per epoch and rank, at any world size (default: one
                process's pass over the windows); more than one pass draws the windows again.
        """
        super().__init__()
        self.root = Path(root)
        self.features = Path(features) if features else self.root / "features"
        self.encoders = list(encoders or ["shape8", "vit16"])
        self.points, self.batch_size, self.anchor, self.temporal = points, batch_size, anchor, temporal
        self.point_input, self.images = point_input, images
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed
        self.eval_windows, self.eval_points = eval_windows, eval_points
        self.action_points, self.action_train_episodes, self.actions = action_points, action_train_episodes, actions
        self.batches_per_epoch, self.num_workers, self.on_bad_sample = batches_per_epoch, num_workers, on_bad_sample
        self.seed, self.where = split_seed, self.root
        if anchor not in ("middle", "random", "first", "last"):
            raise ConfigError("data.anchor", f"must be middle, random, first or last, got {anchor!r}")
        self.save_hyperparameters({"root": str(root), "encoders": self.encoders})
        self.episodes: list[Episode] | None = None
        self._train_windows = 0
        self.splits: dict[str, list[int]] = {}

    # --- setup: every episode checked before the first batch ------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.episodes is not None:
            return
        episodes, skipped = [], 0
        for task, name in find_episodes(self.root):
            try:
                episode = read_episode(self.root, task, name, with_actions=self.actions)
                attach_packs(episode, self.features, self.encoders)
            except DataError as e:
                handle_bad_sample(e, self.on_bad_sample)
                skipped += 1
                continue
            episodes.append(episode)
        if skipped:
            log.warning(f"[rgbpc] skipped {skipped} bad episode(s) under {self.root}")
        if not episodes:
            raise DataError(self.root, "no usable episodes")
        self._check_encoders(episodes)
        self.episodes = episodes
        self.splits = self._split(episodes)
        if stage in ("fit", None) and len(self.splits["train"]) == 0:
            raise DataError(self.root, "no training episodes after holding out val and test")
        if stage in ("fit", "validate", None) and not self.splits["val"]:
            raise DataError(self.root, f"no validation episodes (data.val_fraction={self.val_fraction})")
        if stage in ("test", None) and not self.splits["test"]:
            raise DataError(self.root, f"no held-out episodes (data.test_fraction={self.test_fraction})")
        self._train_windows = len(self._train_dataset())
        self.log_splits(f"[rgbpc] {len(episodes)} episodes", {k: len(v) for k, v in self.splits.items()},
                        f" ({self._train_windows} training windows)")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self._train_windows} if self.episodes is not None else {}

    def data_spec(self) -> RgbpcDataSpec:
        return RgbpcDataSpec(channels=self.channels(), temporal=self.temporal, point_input=self.point_input,
                             images=self.images, eval_windows=self.eval_windows, eval_points=self.eval_points,
                             held_out_episodes=len(self.splits["test"]), features=str(self.features),
                             transforms={e: self.episodes[0].packs[e].transform.to_dict() for e in self.encoders})

    def _check_encoders(self, episodes: list[Episode]) -> None:
        """The same grid and width per encoder in every episode (the model's adapters are sized once)."""
        for encoder in self.encoders:
            first = episodes[0].packs[encoder]
            for e in episodes[1:]:
                pack = e.packs[encoder]
                if pack.channels != first.channels or pack.transform != first.transform:
                    raise DataError(pack.path, f"{pack.channels} channels on {pack.transform}, but "
                                               f"{first.path} has {first.channels} on {first.transform}")

    def channels(self) -> dict[str, int]:
        """Feature width of each encoder's packs (the model's adapters must match)."""
        return {enc: self.episodes[0].packs[enc].channels for enc in self.encoders}

    def _split(self, episodes: list[Episode]) -> dict[str, list[int]]:
        tasks = sorted({e.task for e in episodes})
        labels = [tasks.index(e.task) for e in episodes]
        rest, test = stratified_split(labels, self.test_fraction, self.split_seed)
        fraction = min(0.99, self.val_fraction / max(1e-9, 1 - self.test_fraction))
        keep, val = stratified_split([labels[i] for i in rest], fraction, self.split_seed + 1)
        return {"train": [int(rest[i]) for i in keep], "val": [int(rest[i]) for i in val],
                "test": [int(i) for i in test]}

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {episode: content hash of its first frame and point file}} for the doctor."""
        return {split: {self.episodes[e].key: sample_fingerprint([self.episodes[e].frame_file(0),
                                                                  self.episodes[e].sidecar_file(0)])
                        for e in members} for split, members in self.splits.items()}

    # --- datasets ------------------------------------------------------------------------------------
    def _dataset(self, items: list[Item], points: int, images: bool, seed: int | None) -> RgbpcSamples:
        return RgbpcSamples(self.episodes, items, self.encoders, points, self.point_input, images, seed,
                            self.on_bad_sample)

    def _train_dataset(self) -> RgbpcSamples:
        items = window_items(self.episodes, self.splits["train"], self.encoders[0], self.anchor, self.temporal)
        return self._dataset(items, self.points, self.images, None)

    def _eval_windows(self, split: str) -> RgbpcSamples:
        items = window_items(self.episodes, self.splits[split], self.encoders[0], "middle", self.temporal)
        order = np.random.default_rng(self.split_seed).permutation(len(items))  # batches mix episodes
        return self._dataset([items[i] for i in order], self.eval_points, self.images, seed=1)

    def _eval_steps(self, members: list[int], points: int, shuffle: bool) -> RgbpcSamples:
        window = self.episodes[0].packs[self.encoders[0]].window_size
        items = step_items(self.episodes, members, window, self.temporal)
        if shuffle:
            items = [items[i] for i in np.random.default_rng(self.split_seed).permutation(len(items))]
        return self._dataset(items, points, True, seed=2)

    def action_train_members(self) -> list[int]:
        """The first `action_train_episodes` training episodes, taken evenly over the tasks (all of them
        when it is None)."""
        train = self.splits["train"]
        wanted = len(train) if self.action_train_episodes is None else min(self.action_train_episodes, len(train))
        by_task: dict[str, list[int]] = {}
        for e in train:
            by_task.setdefault(self.episodes[e].task, []).append(e)
        chosen, queues = [], [list(v) for v in by_task.values()]
        while len(chosen) < wanted:
            for queue in queues:
                if queue and len(chosen) < wanted:
                    chosen.append(queue.pop(0))
        return sorted(chosen)

    # --- loaders -------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self._train_dataset())

    def _retrieval_batches(self, dataset, split: str) -> DataLoader:
        # Whole retrieval batches of eval_windows samples: every query is ranked against the same
        # number of candidates on every rank (chance = 1 / (eval_windows x eval_points)).
        groups = [range(i, min(i + self.eval_windows, len(dataset))) for i in range(0, len(dataset), self.eval_windows)]
        return self.grouped_eval_loader(dataset, split, groups)

    def val_dataloader(self) -> DataLoader:
        return self._retrieval_batches(self._eval_windows("val"), "val")

    def test_dataloader(self) -> list[DataLoader]:
        """[steps of the action head's few training episodes, steps of the held-out episodes (in a
        fixed shuffled order: retrieval batches of eval_windows steps mix episodes)]."""
        bank = self._eval_steps(self.action_train_members(), self.action_points, shuffle=False)
        held_out = self._eval_steps(self.splits["test"], self.action_points, shuffle=True)
        return [self._retrieval_batches(bank, "train"), self._retrieval_batches(held_out, "test")]
