"""The tactile recipe's DataModule: TacQuad (or a generic index CSV) -> 4-frame windows, split by
object, decoded once into memory, shuffled per rank for training and sharded per rank for
evaluation.

Batches follow the sample contract of `sensorium.recipes.tactile.reader` (frames (B, 4, 3, S, S) in [0, 1],
sensor, label, index) plus `skipped`; augmentation and normalisation run on the batch in the task.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Literal

from torch.utils.data import DataLoader

from sensorium.data.bad_samples import OnBadSample
from sensorium.data.datamodule import SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.tactile.reader import (
    FRAME_LABELS,
    SCENES,
    TactileSequenceDataset,
    TactileWindow,
    attach_frame_labels,
    read_frame_labels,
    read_index_csv,
    read_tacquad,
    split_windows,
)

log = logging.getLogger(__name__)


class TactileDataModule(SensoriumDataModule):
    def __init__(self, root: str, layout: Literal["tacquad", "index"] = "tacquad", index_csv: str = "index.csv",
                 scenes: list[str] | None = None, labels_csv: str | None = None, reach_before_contact: bool = False,
                 image_size: int = 64, frame_sizes: dict[str, list[int]] | None = None, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, split_seed: int = 0, batch_size: int = 32,
                 batches_per_epoch: int | None = None, eval_batch_size: int = 64, num_workers: int = 0,
                 cache: bool = True, on_bad_sample: OnBadSample = "error", frame_labels_csv: str | None = FRAME_LABELS,
                 reference_frames: bool = False, training_references: bool = False):
        """
        Args:
            root: the TacQuad root (contact_{indoor,outdoor}.csv, data_{indoor,outdoor}/), or the
                folder of the generic index CSV.
            layout: "tacquad" reads the contact CSVs as AnyTouch does; "index" reads `index_csv`
                (one row per window: frame_0..frame_3, sensor[, label]).
            scenes: TacQuad scenes to read (default both).
            labels_csv: scene,item,label CSV under root giving each item's class (evaluation only:
                k-NN and linear probes); None leaves labels unknown (-1) and skips the probes.
            reach_before_contact: windows end at every contact frame and may start before the contact
                range, exactly as AnyTouch's video dataset builds them (default: inside the range).
            frame_sizes: expected raw (H, W) of each sensor's frames, checked on load; None reads
                them from root/synth.json when it exists (synthetic data) and checks nothing otherwise.
            val_fraction, test_fraction, split_seed: share of OBJECTS (TacQuad items) held out, so the
                overlapping windows of one recording never sit on both sides of a split.
            batch_size: windows per training batch and rank (the MAE lr rule scales by it).
            batches_per_epoch: training batches per epoch and rank; default: one process's pass over
                the training windows. The training order is seeded by split_seed and the epoch.
            frame_labels_csv: per-frame force, contact centre and slip under root (evaluation only:
                the force / contact / slip probes; `sensorium synth tactile` writes it). Where the
                file does not exist (real TacQuad) those probes are skipped with a message; None
                does not look for it.
            reference_frames: every sample also carries its recording's reference frame (a frame
                without contact: TacQuad frame 0 before a later contact range, or the index CSV's
                `reference` column), for probes that read features relative to it
                (`model.init_args.evaluation.reference`); a window without one is a DataError.
            training_references: training batches carry the reference frames too (the static task's
                contact target, `model.init_args.loss.static_target: contact`); needs
                reference_frames. Off, only evaluation batches carry them.
            cache: keep decoded frames in memory (each file is decoded once; the demo's 2,000
                windows at 64 px take ~100 MB). With num_workers > 0 each worker caches its own copy.
        """
        super().__init__()
        self.root = self.where = root
        self.layout = layout
        self.index_csv = index_csv
        self.scenes = list(scenes or SCENES)
        self.labels_csv = labels_csv
        self.reach_before_contact = reach_before_contact
        self.image_size = image_size
        self.frame_sizes = frame_sizes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.seed = split_seed
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache = cache
        self.on_bad_sample = on_bad_sample
        self.frame_labels_csv = frame_labels_csv
        self.reference_frames = reference_frames
        if training_references and not reference_frames:
            raise ConfigError("data.training_references", "needs data.reference_frames: true (the reference "
                                                          "frames are what training batches would carry)")
        self.training_references = training_references
        self.save_hyperparameters({"root": root, "layout": layout, "image_size": image_size})
        self.windows: dict[str, list[TactileWindow]] | None = None
        self.datasets: dict[str, TactileSequenceDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        skipped: list[DataError] = []
        root = Path(self.root)
        if self.layout == "tacquad":
            windows = read_tacquad(root, self.scenes, self.labels_csv, self.reach_before_contact,
                                   self.on_bad_sample, skipped)
        elif self.layout == "index":
            windows = read_index_csv(root / self.index_csv, self.on_bad_sample, skipped)
        else:
            raise ConfigError("data.layout", f"must be 'tacquad' or 'index', got {self.layout!r}")
        if skipped:
            log.warning(f"[tactile] skipped {len(skipped)} bad index entries under {root}")
        windows = self._with_frame_labels(windows)
        train, val, test = split_windows(windows, self.val_fraction, self.test_fraction, self.split_seed)
        self.windows = {"train": train, "val": val, "test": test}
        if not train:
            raise DataError(root, f"no training windows ({len(windows)} windows in all)")
        sizes = self._frame_sizes()
        for split, items in self.windows.items():
            self.datasets[split] = TactileSequenceDataset(items, self.image_size, sizes, self.on_bad_sample,
                                                          cache=self.cache, reference=self.reference_frames)
        self.log_splits(f"[tactile] {len(windows)} windows of {len({w.group for w in windows})} objects",
                        self.split_sizes())

    def _with_frame_labels(self, windows: list[TactileWindow]) -> list[TactileWindow]:
        if self.frame_labels_csv is None:
            return windows
        path = Path(self.root) / self.frame_labels_csv
        if not path.is_file():
            log.info(f"[tactile] no {path}: the force / contact / slip probes are skipped (only the "
                     "indenter probes run)")
            return windows
        windows = attach_frame_labels(windows, read_frame_labels(path))
        known = sum(not math.isnan(w.force) for w in windows)
        log.info(f"[tactile] frame labels of {known} of {len(windows)} windows from {path}")
        return windows

    def _frame_sizes(self) -> dict[str, tuple[int, int]] | None:
        if self.frame_sizes is not None:
            return {sensor: tuple(size) for sensor, size in self.frame_sizes.items()}
        synth = Path(self.root) / "synth.json"
        if synth.is_file():
            return {sensor: tuple(size) for sensor, size in json.loads(synth.read_text())["frame_sizes"].items()}
        return None

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {window id (its frame paths): content hash of its four frames}} for the doctor."""
        return {split: {"|".join(w.paths): sample_fingerprint(w.paths) for w in windows}
                for split, windows in (self.windows or {}).items()}

    def split_sizes(self) -> dict[str, int]:
        return {split: len(items) for split, items in (self.windows or {}).items()}

    def has_labels(self, split: str) -> bool:
        return any(w.label >= 0 for w in (self.windows or {}).get(split, []))

    # --- loaders --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if dataset.reference and not self.training_references:  # only the probes read them: batches go without
            dataset = copy.copy(dataset)  # shares the windows and the frame cache
            dataset.reference = False
        return self.train_loader(dataset)

    def val_dataloader(self) -> list[DataLoader]:
        """[val windows (losses, frame-4 prediction, k-NN queries), train windows (the k-NN bank)]."""
        if not self.datasets.get("val") or not len(self.datasets["val"]):
            raise DataError(self.root, f"no validation windows (val_fraction={self.val_fraction})")
        return [self.eval_loader(self.datasets["val"], "val"), self.eval_loader(self.datasets["train"], "train")]

    def test_dataloader(self) -> list[DataLoader]:
        """[test windows (every evaluation), train windows, val windows]: train + val together are
        the k-NN / probe bank; apart, val chooses the force / contact / slip probes' regularisation."""
        if not self.datasets.get("test") or not len(self.datasets["test"]):
            raise DataError(self.root, f"no test windows (test_fraction={self.test_fraction})")
        loaders = [self.eval_loader(self.datasets["test"], "test"), self.eval_loader(self.datasets["train"], "train")]
        if self.datasets.get("val") and len(self.datasets["val"]):
            loaders.append(self.eval_loader(self.datasets["val"], "val"))
        return loaders
