"""The welding recipe's DataModule: manifest checks before training, a validation split carved
from TRAIN, sensor statistics from the training part only, class-balanced training batches, and
per-rank shards for the k-NN evaluation passes.

Frozen features (`feature_cache: DIR`): the engine hands over the task's encoders that are
pretrained and frozen for the whole run (`SensoriumTask.frozen_encoders` -> `attach_frozen_encoders`,
in the task's `setup`); when the loaders are first
built (after Lightning has restored any checkpoint and moved the model to its device), their
outputs for every sample of the manifest are computed once into DIR (`sensorium.data.feature_cache`:
one zarr store per modality, keyed by the encoder's weights, the modality's preprocessing, the
precision and the dataset, rebuilt when a sample's files change), and every loader then reads
those modalities' tokens (`<modality>_tokens`) instead of decoding video, photos or audio.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from sensorium.config import as_config, to_plain
from sensorium.data.bad_samples import OnBadSample
from sensorium.data.datamodule import SensoriumDataModule
from sensorium.data.feature_cache import (
    FEATURE_DTYPES,
    FeatureRequest,
    FeatureStore,
    ensure_feature_stores,
    file_stamp,
)
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.data.samplers import ClassBalancedBatchSampler
from sensorium.data.splits import stratified_split
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.welding.reader import (
    MODALITY_PREPROCESS,
    WeldingDataset,
    WeldingPreprocess,
    WeldingRecord,
    compute_sensor_stats,
    modality_files,
    read_manifest,
    select_split,
)

log = logging.getLogger(__name__)

# The modalities a frozen encoder can be cached for (the sensor encoder is always trained).
CACHEABLE = ("video", "images", "audio")
# Bump when what a cached modality's tensor is changes without its preprocessing settings changing
# (WeldingDataset's decoding, the pretrained encoders' input convention): old caches then rebuild.
FEATURE_INPUTS_VERSION = 1


class WeldingDataModule(SensoriumDataModule):
    def __init__(self, root: str, preprocess: WeldingPreprocess | None = None, classes_per_batch: int = 12,
                 samples_per_class: int = 4, batches_per_epoch: int | None = None, val_fraction: float = 0.15,
                 val_split: str | None = None, split_seed: int = 0, eval_batch_size: int = 64, num_workers: int = 2,
                 cache: bool = False, on_bad_sample: OnBadSample = "error", allow_missing_modalities: bool = False,
                 feature_cache: str | None = None, feature_dtype: str = "float16"):
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
            feature_cache: a directory for the outputs of the encoders that are pretrained and
                frozen for the whole run (`net.<modality>: {pretrained: DIR, freeze: true}`, not
                named by `optim.unfreeze`): computed once per checkpoint, preprocessing, precision
                and dataset, then read by training, validation and test instead of the raw
                video / photos / audio. Every rank must see the directory (one filesystem). None:
                the encoders run on every batch. Cannot be combined with augmentation of a cached
                modality's raw input (the task says so).
            feature_dtype: float16 (half the disk and reading time; tokens round to 11 significant
                bits) or float32.
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
        if feature_dtype not in FEATURE_DTYPES:
            raise ConfigError("data.feature_dtype", f"must be one of {FEATURE_DTYPES}, got {feature_dtype!r}")
        self.feature_cache = feature_cache
        self.feature_dtype = feature_dtype
        self._frozen: dict[str, nn.Module] = {}
        self._stores: dict[str, FeatureStore] | None = None
        self._served: dict[str, WeldingDataset] = {}
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
        return self._loader(self._dataset("train"), None, "train", batch_sampler=self._train_sampler(world, rank))

    def val_dataloader(self) -> list[DataLoader]:
        """[training embeddings (the k-NN bank), validation queries]."""
        return [self.eval_loader(self._dataset("train"), "train"), self.eval_loader(self._dataset("val"), "val")]

    def test_dataloader(self) -> list[DataLoader]:
        """[all of TRAIN (train + val) as the k-NN bank, TEST queries]."""
        bank = ConcatDataset([self._dataset(s) for s in ("train", "val") if s in self.datasets])
        return [self.eval_loader(bank, "train + val"), self.eval_loader(self._dataset("test"), "test")]

    # --- frozen features ------------------------------------------------------------------------
    def attach_frozen_encoders(self, encoders: Mapping[str, nn.Module]) -> tuple[str, ...]:
        """Offer the encoders ({modality: module}) whose weights stay fixed for the whole run.
        With `feature_cache` set, returns the modalities whose loaders will yield
        `<modality>_tokens` (their outputs, computed once) instead of the raw input; without it, ().
        Nothing is computed here: that waits for the first loader (`feature_stores`)."""
        self._stores, self._served = None, {}
        if self.feature_cache is None:
            self._frozen = {}
            return ()
        unknown = sorted(set(encoders) - set(CACHEABLE))
        if unknown:
            raise ConfigError("data.feature_cache", f"no cached features for {unknown}; cacheable: {CACHEABLE}")
        self._frozen = {m: encoders[m] for m in CACHEABLE if m in encoders}
        if not self._frozen:
            log.warning(f"[welding] data.feature_cache is set ({self.feature_cache}), but no encoder is pretrained and "
                        "frozen for the whole run: nothing to cache, every encoder runs on every batch")
        return tuple(self._frozen)

    def feature_stores(self, strategy=None, precision: str | None = None, context=None) -> dict[str, FeatureStore]:
        """The open stores of the attached frozen encoders, built where missing or stale (collective
        under several ranks: every rank's loaders call it). Defaults from the trainer: its strategy,
        its precision (part of the cache's key) and the autocast that precision runs the encoders in."""
        if self._stores is not None:
            return self._stores
        if not self._frozen:
            self._stores = {}
            return self._stores
        trainer = self.trainer
        if trainer is not None:
            strategy = strategy if strategy is not None else trainer.strategy
            precision = precision or str(trainer.precision)
            context = context or trainer.precision_plugin.forward_context
        records = sorted((r for split in self.records.values() for r in split), key=lambda r: r.sample_id)
        p = self.preprocess
        shapes = WeldingDataset([], p)
        requests = []
        for m, encoder in self._frozen.items():
            inputs = {"recipe": "welding", "modality": m, "version": FEATURE_INPUTS_VERSION,
                      "preprocess": {f: getattr(p, f) for f in MODALITY_PREPROCESS[m]},
                      "precision": precision or "32-true"}
            files = [[file_stamp(f) for f in modality_files(r, m)] for r in records]
            zeros = shapes.decode(_NO_FILES, m)[None]  # (1, ...): an input of the real shape
            requests.append(FeatureRequest(m, encoder, inputs, files, zeros,
                                           encode=_PerAngle(encoder) if m == "images" else None))
        self._stores = ensure_feature_stores(
            self.feature_cache, str(Path(self._manifest).resolve()), [r.sample_id for r in records], requests,
            _RawInputs(records, p), dtype=self.feature_dtype, batch_size=self.eval_batch_size,
            num_workers=self.num_workers, on_bad_sample=self.on_bad_sample, strategy=strategy,
            context=context or nullcontext)
        return self._stores

    def _dataset(self, split: str) -> WeldingDataset:
        """The dataset a loader of `split` reads: the decoding one, or with the frozen encoders'
        modalities read from their stores."""
        stores = self.feature_stores()
        if not stores:
            return self.datasets[split]
        if split not in self._served:
            raw = self.datasets[split]
            self._served[split] = WeldingDataset(raw.records, raw.preprocess, raw.sensor_stats, raw.on_bad_sample,
                                                 raw.cache, features=stores)
        return self._served[split]


class _NoFiles:
    """A record with every modality missing: `WeldingDataset.decode` gives the zeros of its shape."""

    video = audio = sensor = None
    images: Sequence = ()


_NO_FILES = _NoFiles()


class _RawInputs:
    """load(row, modalities) for the feature cache's build: the raw inputs of one record (picklable,
    for DataLoader workers)."""

    def __init__(self, records: Sequence[WeldingRecord], preprocess: WeldingPreprocess):
        self.dataset = WeldingDataset(records, preprocess)

    def __call__(self, row: int, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
        record = self.dataset.records[row]
        return {m: self.dataset.decode(record, m) for m in modalities}


class _PerAngle:
    """The images encoder gives every angle's tokens one after another (B, N*L, D); the cache keeps
    them per angle (B, N, L, D), as `ViewAggregation` takes them."""

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(images)
        return tokens.unflatten(1, (images.shape[1], -1))
