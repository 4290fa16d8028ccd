"""The cardiac recipe's splits and loaders: prepared cases (`sensorium prepare cardiac`, read by
`reader.CardiacCases`) as training samples with new points at every access, and evaluation samples.

Splits come from split.csv (case_id,split): `train` trains, `val` chooses (validation each epoch:
best.ckpt and early stopping read its metrics), `test` reports (`sensorium test` / `eval`, the
demo). The val loader reads val cases only and the test loader test cases only, so nothing is
chosen on test. Each split's cases are checked when the datamodule is set up (every npz present,
readable, uncompressed, the same structures in the same order; test cases also hold the voxel
ground truth), so a bad dataset fails in seconds. `CardiacDataSpec` is what the task learns of the
data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from sensorium.config import as_config, to_plain
from sensorium.data.bad_samples import OnBadSample, collate_skipping, handle_bad_sample
from sensorium.data.datamodule import DataSpec, SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.errors import DataError
from sensorium.recipes.cardiac.reader import (
    POINT_ARRAYS,
    CardiacCases,
    CardiacSampling,
    case_path,
    npz_memmap,
    read_split_csv,
)
from sensorium.recipes.cardiac.transforms import RandomRotateScale

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardiacDataSpec(DataSpec):
    """What the cardiac task reads from its data."""

    structures: tuple[str, ...]
    """The prepared cases' structures, in SDF-channel order."""
    val_case_ids: tuple[str, ...]
    """Case ids of the val split, in dataset order (a val sample's `index` points here)."""
    test_case_ids: tuple[str, ...]
    """Case ids of the test split, in dataset order (a test sample's `index` points here); empty
    when split.csv has no test cases."""
    root: str


def collate_voxels(samples: list[dict | None]) -> dict:
    """`collate_skipping`, with each case's cropped `voxel_labels` (shapes differ) kept as a list."""
    kept = [s for s in samples if s is not None]
    voxels = [s.pop("voxel_labels") for s in kept if "voxel_labels" in s]
    batch = collate_skipping(samples)
    if voxels:
        batch["voxel_labels"] = voxels
    return batch


class CardiacDataModule(SensoriumDataModule):
    def __init__(self, root: str, sampling: CardiacSampling | None = None, batch_size: int = 8,
                 epoch_repeats: int = 1, batches_per_epoch: int | None = None, eval_batch_size: int = 4,
                 eval_surface_points: int | None = None,
                 num_workers: int = 0, seed: int = 0, on_bad_sample: OnBadSample = "error"):
        """
        Args:
            root: directory of `sensorium prepare cardiac` output (<case_id>.npz, split.csv).
            sampling: points per training sample.
            batch_size: shapes per training batch and rank.
            epoch_repeats: training cases are listed this many times per epoch (each time with new
                points), so an epoch of a few dozen cases still makes enough optimiser steps
                between validations.
            batches_per_epoch: training batches per epoch and rank; default: one process's pass over
                the (repeated) training cases.
            eval_surface_points: encoder input of evaluation samples; default sampling.surface_points.
        """
        super().__init__()
        self.root = self.where = Path(root)
        self.sampling = as_config(CardiacSampling, sampling)
        self.batch_size = batch_size
        self.epoch_repeats = epoch_repeats
        self.batches_per_epoch = batches_per_epoch
        self.eval_batch_size = eval_batch_size
        self.eval_surface_points = eval_surface_points or self.sampling.surface_points
        self.num_workers = num_workers
        self.seed = seed
        self.on_bad_sample = on_bad_sample
        self.save_hyperparameters({"root": str(root), "sampling": to_plain(self.sampling)})
        self.cases: dict[str, list[str]] | None = None
        self.class_names: tuple[str, ...] | None = None
        self.datasets: dict[str, CardiacCases] = {}
        self._logged = False

    def path(self, case_id: str) -> Path:
        return case_path(self.root, case_id)

    def setup(self, stage: str | None = None) -> None:
        if self.cases is None:
            self.cases = self._check_cases(read_split_csv(self.root / "split.csv"))
        split_csv = self.root / "split.csv"
        if stage in ("fit", None) and not self.cases.get("train"):
            raise DataError(split_csv, "no train cases")
        if stage in ("fit", "validate", None) and not self.cases.get("val"):
            raise DataError(split_csv, "no val cases: validation picks best.ckpt with them "
                                       "(`sensorium prepare cardiac --val-fraction`)")
        if stage == "test" and not self.cases.get("test"):
            raise DataError(split_csv, "no test cases: the test reports on them, and no other split may stand in "
                                       "(`sensorium prepare cardiac --test-fraction`, or a test split in split.csv)")
        paths = {split: [self.path(c) for c in ids] for split, ids in self.cases.items()}
        if "train" in paths and "train" not in self.datasets:
            s = self.sampling
            augment = RandomRotateScale(s.rotate_deg, s.scale) if s.rotate_deg or s.scale else None
            self.datasets["train"] = CardiacCases(paths["train"], s, repeats=self.epoch_repeats,
                                                  on_bad_sample=self.on_bad_sample, transform=augment)
        # Val and test each their own dataset: the val loader never holds a test case.
        for split in ("val", "test"):
            if split in paths and split not in self.datasets:
                self.datasets[split] = CardiacCases(paths[split], None, self.eval_surface_points,
                                                    on_bad_sample=self.on_bad_sample, voxels=split == "test")
        if not self._logged:
            self._logged = True
            self.log_splits(f"[cardiac] {sum(len(ids) for ids in self.cases.values())} cases of "
                            f"{len(self.class_names or ())} structures", {k: len(v) for k, v in self.cases.items()},
                            "; val chooses, test reports")

    def split_sizes(self) -> dict[str, int]:
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def data_spec(self) -> CardiacDataSpec:
        return CardiacDataSpec(structures=tuple(self.class_names or ()), val_case_ids=tuple(self.cases.get("val", ())),
                               test_case_ids=tuple(self.cases.get("test", ())), root=str(self.root))

    def _check_cases(self, splits: dict[str, list[str]]) -> dict[str, list[str]]:
        """Cheap checks of every listed case (zip directory and npy headers only): present, readable,
        uncompressed, enough points, the same structures; a bad case raises or is skipped."""
        kept: dict[str, list[str]] = {}
        skipped = 0
        for split, ids in splits.items():
            for case_id in ids:
                path = self.path(case_id)
                try:
                    if not path.is_file():
                        raise DataError(path, f"listed in split.csv ({split}) but missing")
                    arrays = npz_memmap(path)
                    names = tuple(str(n) for n in np.array(arrays.get("class_names", np.array([]))))
                    if not names:
                        raise DataError(path, "no class_names; was it written by `sensorium prepare cardiac`?")
                    if self.class_names is None:
                        self.class_names = names
                    elif names != self.class_names:
                        raise DataError(path, f"structures {list(names)} differ from the other cases' "
                                              f"{list(self.class_names)}")
                    self._check_counts(path, arrays, split)
                except DataError as e:
                    handle_bad_sample(e, self.on_bad_sample)
                    skipped += 1
                    continue
                kept.setdefault(split, []).append(case_id)
        if skipped:
            log.warning(f"[cardiac] skipped {skipped} bad case(s) under {self.root}")
        return kept

    def _check_counts(self, path: Path, arrays: dict[str, np.ndarray], split: str) -> None:
        missing = [k for k in (*POINT_ARRAYS, "scale") if k not in arrays]
        if missing:
            raise DataError(path, f"missing arrays {missing}")
        if split == "train":
            s = self.sampling
            for name, count in (("surface_points", s.surface_points), ("vol_points", s.volume_points),
                                ("near_points", s.near_points)):
                if len(arrays[name]) < count:
                    raise DataError(path, f"stores {len(arrays[name])} {name} but sampling asks for {count}")
        elif len(arrays["surface_points"]) < self.eval_surface_points:
            raise DataError(path, f"stores {len(arrays['surface_points'])} surface points; evaluation asks for "
                                  f"{self.eval_surface_points}")
        if split == "test" and not {"voxel_labels", "voxel_origin", "affine"} <= set(arrays):
            raise DataError(path, "a test case without voxel_labels (prepared by an older `sensorium prepare "
                                  "cardiac`): prepare it again for the test's Dice, HD95, ASSD and volumes")

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {case_id: content hash of its npz}} for the doctor's overlap check."""
        return {split: {c: sample_fingerprint([self.path(c)]) for c in ids} for split, ids in (self.cases or {}).items()}

    # --- loaders --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["val"], "val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"], "test", collate_fn=collate_voxels)
