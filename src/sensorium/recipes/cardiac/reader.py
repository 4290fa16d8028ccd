"""The cardiac recipe's on-disk layout, and the Dataset that reads prepared cases.

Raw input (`sensorium synth cardiac` writes it, `sensorium prepare cardiac` reads it):

    DIR/<case_id>.nii.gz | .nii   integer label volume, 0 = background
    DIR/labels.json               {"background": 0, "structures": {name: label value, ...}}; without
                                  one, CARDIAC_STRUCTURES with labels 1..10

Prepared data (`sensorium prepare cardiac` writes it, the datamodule reads it):

    ROOT/<case_id>.npz   one case, uncompressed (np.savez), read by memory-mapping its members
    ROOT/split.csv       case_id,split (train / val / test)
    ROOT/prepare.json    the settings and what was prepared or skipped

npz arrays (float32 unless noted; Ns, Nv, Nn points; C structures):

    surface_points (Ns, 3)   surface_normals (Ns, 3) unit, outward   surface_labels (Ns,) int64
    vol_points (Nv, 3)       vol_sdf (Nv, C)
    near_points (Nn, 3)      near_sdf (Nn, C)      near_labels (Nn,) int64 (structure sampled)
    grid_sdf (R, R, R, C)    indexed [i, j, k] along x, y, z at linspace(-1, 1, R) (if R > 0)
    scale () float64         offset (3,) float64   (world_mm = points * scale + offset)
    class_names (C,) str     label_values (C,) int64    case_id () str
    spacing (3,) float64 mm  affine (4, 4) float64      shape (3,) int64    near_sigmas (2,) float64
    voxel_labels (X', Y', Z') uint8   the label volume as structure index + 1 (0 background), cropped
                                      to the voxels whose centres can lie in [-1, 1]^3
    voxel_origin (3,) int64           the crop's first voxel in the volume (voxel_labels[i, j, k] is
                                      voxel origin + (i, j, k); world mm by `affine`)

SDF values are negative inside (`sensorium.data.sdf`), in normalised units.

A training sample (`CardiacCases` with a `CardiacSampling`) is a random draw from one case's stored
points, new at every access:

    surface_points (Ns, 3) + surface_labels (Ns,)    the encoder's input (and, its first points,
                                                     the surface term's queries: the draw is in
                                                     random order, so any prefix is a random subset)
    vol_points (Nv, 3) + vol_sdf (Nv, C)             uniform in [-1, 1]^3
    near_points (Nn, 3) + near_sdf (Nn, C) + near_labels (Nn,)

An evaluation sample holds a fixed encoder input (drawn with a seed from the case's position, so
every evaluation sees the same one), all stored volume and near points (the IoU points), all surface
samples as the ground-truth surface for Chamfer distances, and the case's `scale` (mm per normalised
unit). A test sample (`voxels=True`) adds the voxel ground truth: `voxel_labels` (X', Y', Z') uint8,
`voxel_to_normalised` (4, 4) (crop voxel index -> normalised point, `voxel_to_normalised`),
`voxel_spacing` (3,) mm and `voxel_volume` (mm^3).
"""

from __future__ import annotations

import csv
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.errors import DataError

CARDIAC_STRUCTURES: tuple[str, ...] = (
    "left_ventricle",
    "right_ventricle",
    "left_atrium",
    "right_atrium",
    "lv_myocardium",
    "aorta",
    "pulmonary_artery",
    "superior_vena_cava",
    "inferior_vena_cava",
    "pulmonary_veins",
)
"""The cardiac recipe's structures in channel order; default label value = index + 1."""

POINT_ARRAYS = ("surface_points", "surface_labels", "vol_points", "vol_sdf", "near_points", "near_sdf",
                "near_labels")
"""The npz arrays a training sample draws from."""


def case_path(root: str | Path, case_id: str) -> Path:
    """ROOT/<case_id>.npz: one prepared case."""
    return Path(root) / f"{case_id}.npz"


# --- label maps -----------------------------------------------------------------------------------
def write_label_map(path: str | Path, names: tuple[str, ...], values: tuple[int, ...] | None = None) -> None:
    """labels.json: `{"background": 0, "structures": {name: label value}}` (values default 1..C)."""
    values = tuple(range(1, len(names) + 1)) if values is None else values
    Path(path).write_text(json.dumps({"background": 0, "structures": dict(zip(names, map(int, values)))},
                                     indent=2) + "\n")


def read_label_map(path: str | Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(names, label values) from a labels.json, in file order."""
    try:
        content = json.loads(Path(path).read_text())
        structures = content["structures"]
        names, values = tuple(structures), tuple(int(v) for v in structures.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(path, f"not a label map ({e}); expected "
                              '{"background": 0, "structures": {"name": label, ...}}') from e
    if len(set(values)) != len(values) or 0 in values:
        raise DataError(path, f"label values must be distinct and non-zero, got {list(values)}")
    return names, values


# --- splits ---------------------------------------------------------------------------------------
def write_split_csv(path: str | Path, splits: dict[str, str]) -> None:
    """split.csv from {case_id: split}, sorted by case id."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "split"])
        for cid in sorted(splits):
            writer.writerow([cid, splits[cid]])


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


# --- the dataset ----------------------------------------------------------------------------------
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
    0: off (`transforms.RandomRotateScale`)."""
    scale: float = 0.0
    """Augmentation: points and SDF values multiplied by one factor in 1 -+ scale (distances scale
    with the points: still exact); 0: off."""


def voxel_to_normalised(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(4, 4) map from an index (i, j, k) of `voxel_labels` to the normalised point of that voxel's
    centre: the crop's origin, then the volume's affine (world mm), then the stored normalisation
    `(world - offset) / scale`."""
    affine = np.asarray(arrays["affine"], dtype=np.float64)
    origin = np.asarray(arrays["voxel_origin"], dtype=np.float64)
    scale, offset = float(np.asarray(arrays["scale"])), np.asarray(arrays["offset"], dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = affine[:3, :3] / scale
    out[:3, 3] = (affine[:3, :3] @ origin + affine[:3, 3] - offset) / scale
    return out


def _take(array: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[index]))


class CardiacCases(Dataset):
    """Samples of prepared cases (see the module docstring).

    Args:
        paths: one npz per case.
        sampling: point counts of a training sample; None makes evaluation samples.
        eval_surface_points: encoder input size of an evaluation sample.
        voxels: evaluation samples also carry the voxel ground truth (test samples; module docstring).
        repeats: the dataset lists every case this many times (a training epoch then sees each case
            `repeats` times, each with new points).
        transform: applied to each training sample after its points are drawn (augmentation; the
            datamodule passes `transforms.RandomRotateScale` when sampling asks for it).
    """

    def __init__(self, paths: list[Path], sampling: CardiacSampling | None = None, eval_surface_points: int = 2048,
                 repeats: int = 1, on_bad_sample: OnBadSample = "error",
                 transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                 voxels: bool = False):
        self.paths = list(paths)
        self.voxels = voxels
        self.sampling = sampling
        self.eval_surface_points = eval_surface_points
        self.repeats = repeats
        self.on_bad_sample = on_bad_sample
        self.transform = transform
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
            sample = (self._train_sample(arrays, self.paths[case]) if self.sampling is not None
                      else self._eval_sample(arrays, case))
        except DataError as e:
            handle_bad_sample(e, self.on_bad_sample)
            return None
        sample["index"] = torch.tensor(case)
        return sample

    @staticmethod
    def _draw(available: int, count: int, path: Path, what: str) -> tuple[np.ndarray, torch.Tensor]:
        """`count` distinct rows in random order, read in increasing file order."""
        if count > available:
            raise DataError(path, f"asks for {count} {what} per sample but the case stores {available}")
        # torch's RNG: seeded per DataLoader worker and per epoch (numpy's is copied into workers).
        rows = torch.randperm(available)[:count]
        order = rows.argsort()
        return rows[order].numpy(), order.argsort()  # sorted rows to read; how to put them back in draw order

    def _train_sample(self, arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
        s = self.sampling  # path: the case's file, named by a "not enough points" error
        out: dict[str, torch.Tensor] = {}
        for prefix, count, names in (("surface", s.surface_points, ("surface_points", "surface_labels")),
                                     ("vol", s.volume_points, ("vol_points", "vol_sdf")),
                                     ("near", s.near_points, ("near_points", "near_sdf", "near_labels"))):
            rows, back = self._draw(len(arrays[names[0]]), count, path, f"{prefix} points")
            for name in names:
                out[name] = _take(arrays[name], rows)[back]
        return self.transform(out) if self.transform is not None else out

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
        if self.voxels:
            if "voxel_labels" not in arrays:
                raise DataError(self.paths[case], "no voxel_labels: prepared by an older `sensorium prepare cardiac`; "
                                                  "prepare it again for the test's voxel metrics")
            affine = np.asarray(arrays["affine"], dtype=np.float64)[:3, :3]
            out["voxel_labels"] = torch.from_numpy(np.array(arrays["voxel_labels"]))
            out["voxel_to_normalised"] = torch.from_numpy(voxel_to_normalised(arrays))
            out["voxel_spacing"] = torch.from_numpy(np.linalg.norm(affine, axis=0))
            out["voxel_volume"] = torch.tensor(abs(float(np.linalg.det(affine))), dtype=torch.float64)
        return out
