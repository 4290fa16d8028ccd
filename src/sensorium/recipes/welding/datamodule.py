"""The welding recipe's DataModule: manifest checks before training, a validation split carved
from TRAIN, sensor statistics from the training part only, class-balanced training batches, and
per-rank shards for the k-NN evaluation passes."""

from __future__ import annotations

import logging

from torch.utils.data import ConcatDataset, DataLoader

from sensorium.config import as_config, to_plain
from sensorium.data.bad_samples import OnBadSample
from sensorium.data.datamodule import SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.data.samplers import ClassBalancedBatchSampler
from sensorium.data.splits import stratified_split
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.welding.reader import (
    WeldingDataset,
    WeldingPreprocess,
    WeldingRecord,
    compute_sensor_stats,
    read_manifest,
    select_split,
)

log = logging.getLogger(__name__)


class WeldingDataModule(SensoriumDataModule):
    def __init__(self, root: str, preprocess: WeldingPreprocess | None = None, classes_per_batch: int = 12,
                 samples_per_class: int = 4, batches_per_epoch: int | None = None, val_fraction: float = 0.15,
                 val_split: str | None = None, split_seed: int = 0, eval_batch_size: int = 64, num_workers: int = 2,
                 cache: bool = False, on_bad_sample: OnBadSample = "error", allow_missing_modalities: bool = False):
        """
        Args:
            root: dataset root holding manifest.csv (Intel Robotic Welding layout).
            classes_per_batch, samples_per_class: each training batch holds that many classes with
                that many samples each (m >= 2, so every anchor of the contrastive loss has positives).
            batches_per_epoch: training batches per epoch and rank; default len(train) // batch_size
                (one process's epoch, at any world size).
            val_fraction: share of each TRAIN class carved out for per-epoch k-NN validation.
            val_split: use this manifest split (e.g. "VAL") for validation instead of carving.
            cache: keep decoded samples in memory (small datasets; with num_workers > 0 each worker
                keeps its own cache, so the demo uses num_workers 0).
            allow_missing_modalities: a sample lacking a modality file gets present=False instead of
                an error (inference on incomplete recordings; the fusion masks it out).
        """
        super().__init__()
        self.root = root
        self.preprocess = as_config(WeldingPreprocess, preprocess)
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.batches_per_epoch = batches_per_epoch
        self.val_fraction = val_fraction
        self.val_split = val_split
        self.split_seed = self.seed = split_seed
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache = cache
        self.on_bad_sample = on_bad_sample
        self.allow_missing_modalities = allow_missing_modalities
        # Plain values only, so checkpoints stay loadable with weights_only=True.
        self.save_hyperparameters({"root": root, "preprocess": to_plain(self.preprocess)})
        self.records: dict[str, list[WeldingRecord]] | None = None
        self.datasets: dict[str, WeldingDataset] = {}

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def setup(self, stage: str | None = None) -> None:
        if self.records is None:
            self.records = self._split_records()
        train = self.records["train"]
        if stage in ("fit", "validate", None) and not self.records["val"]:
            raise DataError(self._manifest, f"no validation samples (data.val_fraction={self.val_fraction}, "
                                            f"data.val_split={self.val_split}); the per-epoch k-NN validation "
                                            "that picks best.ckpt needs some")
        stats = compute_sensor_stats(train, self.preprocess.sensor_columns, self.on_bad_sample)  # TRAIN only
        for split, records in self.records.items():
            if split not in self.datasets and records:
                self.datasets[split] = WeldingDataset(records, self.preprocess, stats, self.on_bad_sample, self.cache)
        if stage in ("fit", None):
            self._train_sampler(num_replicas=1, rank=0)  # fails here, in seconds, if batches cannot be filled
        if stage in ("test", "predict") and not self.records["test"]:
            select_split(self.records["test"], "TEST", self._manifest)  # raises: the TEST split is empty

    def _split_records(self) -> dict[str, list[WeldingRecord]]:
        records = read_manifest(self.root, self.on_bad_sample, self.allow_missing_modalities,
                                self.preprocess.sensor_columns)  # cheap checks: a bad dataset fails in seconds
        self._manifest = self.where = records.manifest
        if records.skipped:
            log.warning(f"[welding] skipped {len(records.skipped)} bad sample(s) from {records.manifest}")
        train_all = select_split(records, "TRAIN")
        if self.val_split:
            train, val = list(train_all), list(select_split(records, self.val_split))
        else:
            keep, held = stratified_split([r.label for r in train_all], self.val_fraction, self.split_seed)
            train, val = [train_all[i] for i in keep], [train_all[i] for i in held]
        test = [r for r in records if r.split == "TEST"]
        splits = {"train": train, "val": val, "test": test}
        self.log_splits(f"[welding] {sum(len(v) for v in splits.values())} runs", {k: len(v) for k, v in splits.items()})
        return splits

    def split_sizes(self) -> dict[str, int]:
        return {split: len(records) for split, records in (self.records or {}).items() if records}

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {SUBDIRS: content hash}} for the doctor's overlap check."""
        return {split: {r.sample_id: sample_fingerprint([r.video, r.audio, r.sensor, *r.images]) for r in records}
                for split, records in (self.records or {}).items()}

    # --- loaders --------------------------------------------------------------------------------
    def _train_sampler(self, num_replicas: int, rank: int) -> ClassBalancedBatchSampler:
        labels = self.datasets["train"].labels
        try:
            return ClassBalancedBatchSampler(
                labels.numpy(), min(self.classes_per_batch, len(labels.unique())), self.samples_per_class,
                num_replicas, rank, seed=self.split_seed, batches_per_epoch=self.batches_per_epoch)
        except ConfigError as e:
            carved = f" after carving {len(self.records['val'])} for validation" if not self.val_split else ""
            raise DataError(self._manifest, f"the training runs ({len(labels)} of TRAIN{carved}) cannot fill "
                                            f"class-balanced batches: data.{e.path}: {e.problem}") from None

    def train_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world
        return self._loader(self.datasets["train"], None, batch_sampler=self._train_sampler(world, rank))

    def val_dataloader(self) -> list[DataLoader]:
        """[training embeddings (the k-NN bank), validation queries]."""
        return [self.eval_loader(self.datasets["train"], "train"), self.eval_loader(self.datasets["val"], "val")]

    def test_dataloader(self) -> list[DataLoader]:
        """[all of TRAIN (train + val) as the k-NN bank, TEST queries]."""
        bank = ConcatDataset([self.datasets[s] for s in ("train", "val") if s in self.datasets])
        return [self.eval_loader(bank, "train + val"), self.eval_loader(self.datasets["test"], "test")]
