"""The cardiac recipe's data: prepared cases (`sensorium prepare cardiac`) as training and evaluation
samples, read by memory-mapping the uncompressed npz members (no whole-file loads).

A training sample is a random draw from one case's stored points, new at every access:

    surface_points (Ns, 3) + surface_labels (Ns,)    the encoder's input (and, its first points,
                                                     the surface term's queries: the draw is in
                                                     random order, so any prefix is a random subset)
    vol_points (Nv, 3) + vol_sdf (Nv, C)             uniform in [-1, 1]^3
    near_points (Nn, 3) + near_sdf (Nn, C) + near_labels (Nn,)

An evaluation sample holds a fixed encoder input (drawn with a seed from the case's position, so
every evaluation sees the same one), all stored volume and near points (the IoU points), all surface
samples as the ground-truth surface for Chamfer distances, and the case's `scale` (mm per normalised
unit). SDF values are negative inside (`sensorium.data.sdf`), in normalised units.

Splits come from split.csv (case_id,split); evaluation uses the `test` split when it has cases,
else `val`. Each split's cases are checked when the datamodule is set up (every npz present,
readable, uncompressed, the same structures in the same order), so a bad dataset fails in seconds.
"""

from __future__ import annotations

import csv
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sensorium.config import as_config, to_plain
from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.datamodule import DataSpec, SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.errors import DataError

log = logging.getLogger(__name__)

POINT_ARRAYS = ("surface_points", "surface_labels", "vol_points", "vol_sdf", "near_points", "near_sdf",
                "near_labels")


# --- memory-mapped npz ----------------------------------------------------------------------------
def npz_memmap(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an uncompressed `.npz` as a read-only `np.memmap` into the file itself.

    np.savez stores each array as a `.npy` member without compression, so its data is one contiguous
    byte range of the file: the zip's local header says where the member starts, the npy header
    what it holds. Indexing a memmap reads only the pages it touches. Raises DataError for a file
    that is not a zip, or with a compressed member (np.savez_compressed: use np.savez).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    raise DataError(path, f"member {info.filename} is compressed; random access needs the "
                                          "uncompressed npz that `sensorium prepare cardiac` writes (np.savez)")
                f.seek(info.header_offset)
                local = f.read(30)  # the local file header; its name / extra lengths can differ from the directory's
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                # The public readers: versions 2.0 and 3.0 share the 4-byte header length.
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise DataError(path, f"member {info.filename} holds Python objects (pickle); not supported")
                arrays[info.filename[:-4]] = np.memmap(f.name, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                                       order="F" if fortran else "C")
    except (OSError, zipfile.BadZipFile, ValueError, struct.error) as e:
        raise DataError(path, f"cannot read as an npz of prepared samples ({type(e).__name__}: {e})") from e
    return arrays


# --- datasets -------------------------------------------------------------------------------------
@dataclass
class CardiacSampling:
    """Points per training sample (the `data.sampling` block in YAML)."""

    surface_points: int = 2048
    """Encoder input per shape (the paper config: 8192)."""
    volume_points: int = 1024
    near_points: int = 1024
    rotate_deg: float = 0.0
    """Augmentation: every point of a training sample rotated about a random axis through the
    origin by up to this angle. Distances are invariant under rotation, so the labels stay exact;
    0: off."""
    scale: float = 0.0
    """Augmentation: points and SDF values multiplied by one factor in 1 -+ scale (distances scale
    with the points: still exact); 0: off."""


def random_rotation(max_deg: float) -> torch.Tensor:
    """(3, 3) rotation about a uniformly random axis by an angle uniform in [-max_deg, max_deg]
    (torch's RNG, so DataLoader workers draw differently)."""
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    axis = torch.randn(3, dtype=torch.float64)
    angle = torch.deg2rad((torch.rand((), dtype=torch.float64) * 2 - 1) * max_deg)
    return axis_angle_to_rotation_matrix((axis / axis.norm() * angle)[None])[0]


def _take(array: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[index]))


class CardiacCases(Dataset):
    """Samples of prepared cases (see the module docstring).

    Args:
        paths: one npz per case.
        sampling: point counts of a training sample; None makes evaluation samples.
        eval_surface_points: encoder input size of an evaluation sample.
        repeats: the dataset lists every case this many times (a training epoch then sees each case
            `repeats` times, each with new points).
    """

    def __init__(self, paths: list[Path], sampling: CardiacSampling | None = None, eval_surface_points: int = 2048,
                 repeats: int = 1, on_bad_sample: OnBadSample = "error"):
        self.paths = list(paths)
        self.sampling = sampling
        self.eval_surface_points = eval_surface_points
        self.repeats = repeats
        self.on_bad_sample = on_bad_sample
        self._arrays: dict[int, dict[str, np.ndarray]] = {}  # opened lazily, per worker process

    def __len__(self) -> int:
        return len(self.paths) * self.repeats

    def arrays(self, case: int) -> dict[str, np.ndarray]:
        if case not in self._arrays:
            arrays = npz_memmap(self.paths[case])
            missing = [k for k in POINT_ARRAYS if k not in arrays]
            if missing:
                raise DataError(self.paths[case], f"missing arrays {missing}; was it written by `sensorium prepare "
                                                  "cardiac`?")
            self._arrays[case] = arrays
        return self._arrays[case]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        case = index % len(self.paths)
        try:
            arrays = self.arrays(case)
            sample = self._train_sample(arrays) if self.sampling is not None else self._eval_sample(arrays, case)
        except DataError as e:
            handle_bad_sample(e, self.on_bad_sample)
            return None
        sample["index"] = torch.tensor(case)
        return sample

    @staticmethod
    def _draw(available: int, count: int, path: Path, what: str) -> np.ndarray:
        """`count` distinct rows in random order, read in increasing file order."""
        if count > available:
            raise DataError(path, f"asks for {count} {what} per sample but the case stores {available}")
        # torch's RNG: seeded per DataLoader worker and per epoch (numpy's is copied into workers).
        rows = torch.randperm(available)[:count]
        order = rows.argsort()
        return rows[order].numpy(), order.argsort()  # sorted rows to read; how to put them back in draw order

    def _train_sample(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        s, path = self.sampling, self.paths[0]
        out: dict[str, torch.Tensor] = {}
        for prefix, count, names in (("surface", s.surface_points, ("surface_points", "surface_labels")),
                                     ("vol", s.volume_points, ("vol_points", "vol_sdf")),
                                     ("near", s.near_points, ("near_points", "near_sdf", "near_labels"))):
            rows, back = self._draw(len(arrays[names[0]]), count, path, f"{prefix} points")
            for name in names:
                out[name] = _take(arrays[name], rows)[back]
        if s.rotate_deg or s.scale:
            # One rigid rotation and scale for the whole sample: encoder input and queries agree.
            rotation = random_rotation(s.rotate_deg).float()
            factor = 1.0 + (float(torch.rand(())) * 2 - 1) * s.scale
            for name in ("surface_points", "vol_points", "near_points"):
                out[name] = out[name] @ rotation.T * factor  # (N, 3) row vectors
            for name in ("vol_sdf", "near_sdf"):
                out[name] = out[name] * factor
        return out

    def _eval_sample(self, arrays: dict[str, np.ndarray], case: int) -> dict[str, torch.Tensor]:
        available = len(arrays["surface_points"])
        if self.eval_surface_points > available:
            raise DataError(self.paths[case], f"evaluation asks for {self.eval_surface_points} surface points but "
                                              f"the case stores {available}")
        rows = np.sort(np.random.default_rng([7, case]).choice(available, self.eval_surface_points, replace=False))
        out = {"surface_points": _take(arrays["surface_points"], rows),
               "surface_labels": _take(arrays["surface_labels"], rows),
               "gt_surface_points": torch.from_numpy(np.array(arrays["surface_points"])),
               "gt_surface_labels": torch.from_numpy(np.array(arrays["surface_labels"])),
               "scale": torch.tensor(float(np.array(arrays["scale"])))}
        for name in ("vol_points", "vol_sdf", "near_points", "near_sdf"):
            out[name] = torch.from_numpy(np.array(arrays[name]))
        return out


# --- splits ---------------------------------------------------------------------------------------
def read_split_csv(path: str | Path) -> dict[str, list[str]]:
    """{split: [case_id, ...]} from split.csv (columns case_id, split); a case id may appear once."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no split.csv; run `sensorium prepare cardiac` on the label volumes first")
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"case_id", "split"} <= set(reader.fieldnames):
            raise DataError(path, f"expected columns case_id,split; got {reader.fieldnames}")
        for row in reader:
            case_id, split = row["case_id"].strip(), row["split"].strip()
            if case_id in seen:
                raise DataError(path, f"case {case_id!r} is listed twice ({seen[case_id]} and {split})")
            seen[case_id] = split
            splits.setdefault(split, []).append(case_id)
    return splits


@dataclass(frozen=True)
class CardiacDataSpec(DataSpec):
    """What the cardiac task reads from its data."""

    structures: tuple[str, ...]
    """The prepared cases' structures, in SDF-channel order."""
    eval_split: str
    """The split evaluation reads."""
    eval_case_ids: tuple[str, ...]
    """Case ids of the evaluation split, in dataset order (a sample's `index` points here)."""
    root: str


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

    @property
    def eval_split(self) -> str:
        return "test" if self.cases and self.cases.get("test") else "val"

    def path(self, case_id: str) -> Path:
        return self.root / f"{case_id}.npz"

    def setup(self, stage: str | None = None) -> None:
        if self.cases is None:
            self.cases = self._check_cases(read_split_csv(self.root / "split.csv"))
        if stage in ("fit", None) and not self.cases.get("train"):
            raise DataError(self.root / "split.csv", "no train cases")
        if not self.cases.get(self.eval_split):
            raise DataError(self.root / "split.csv", "no val (or test) cases: validation picks best.ckpt with them")
        paths = {split: [self.path(c) for c in ids] for split, ids in self.cases.items()}
        if "train" in paths and "train" not in self.datasets:
            self.datasets["train"] = CardiacCases(paths["train"], self.sampling, repeats=self.epoch_repeats,
                                                  on_bad_sample=self.on_bad_sample)
        split = self.eval_split
        if split not in self.datasets:
            self.datasets[split] = CardiacCases(paths[split], None, self.eval_surface_points,
                                                on_bad_sample=self.on_bad_sample)
            self.log_splits(f"[cardiac] {sum(len(ids) for ids in self.cases.values())} cases of "
                            f"{len(self.class_names or ())} structures", {k: len(v) for k, v in self.cases.items()},
                            f"; evaluation reads {split}")

    def split_sizes(self) -> dict[str, int]:
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def data_spec(self) -> CardiacDataSpec:
        return CardiacDataSpec(structures=tuple(self.class_names or ()), eval_split=self.eval_split,
                               eval_case_ids=tuple(self.cases[self.eval_split]), root=str(self.root))

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

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {case_id: content hash of its npz}} for the doctor's overlap check."""
        return {split: {c: sample_fingerprint([self.path(c)]) for c in ids} for split, ids in (self.cases or {}).items()}

    # --- loaders --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets[self.eval_split], self.eval_split)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets[self.eval_split], self.eval_split)
