"""`sensorium prepare cardiac`: NIfTI label volumes -> one `.npz` of surface and SDF samples per case.

    sensorium prepare cardiac --input DIR --out DIR [--workers N] [--val-fraction F] [--test-fraction F]
                              [--seed S] [--splits split.csv] [--on-bad-case error|skip]
                              [--labels labels.json] [--near-sigmas S1 S2]

Input: `DIR/*.nii.gz` and `DIR/*.nii`, integer label volumes (0 = background). Which label value
is which structure comes from `--labels`, else `DIR/labels.json`, else the default: the structures
of `CARDIAC_STRUCTURES` with labels 1..10. A real dataset with other values (MM-WHS uses 205, 420,
500, ...) needs only a labels.json: `{"background": 0, "structures": {"left_ventricle": 500, ...}}`.

Per case (`prepare_case`), with the geometry of `sensorium.data.sdf`:

- per structure, its surface by marching cubes in world coordinates (affine and spacing honoured);
- all coordinates normalised as `normalised = (world - offset) / scale`, with `offset` the centre of
  the surfaces' bounding box and one isotropic `scale` that puts that box inside
  [-margin, margin]^3 (so distances stay distances: `sdf_world = sdf * scale`);
- `surface_*`: area-weighted samples over all structures' surfaces (the encoder's input);
- `vol_*`: points uniform in [-1, 1]^3; `near_*`: surface samples of each structure in equal number
  (small structures get as much supervision near their surface as large ones) plus isotropic
  Gaussian offsets, half at each of two scales, clipped to [-1, 1]^3;
- `*_sdf`: (N, C) signed distance of every point to every structure, **negative inside** (the
  convention of `sensorium.data.sdf`), in normalised units;
- `grid_sdf`: the same on a regular R^3 grid over [-1, 1]^3 (R = `grid_resolution`, 0 for none):
  a coarse picture of the case, from which the evaluation builds the mean-shape baseline.
- `voxel_labels` + `voxel_origin`: the label volume itself, cropped to the voxels that can hold a
  point of [-1, 1]^3 (the model's domain), as structure index + 1 (0 background): the ground truth
  of the test's voxel metrics (Dice, HD95, ASSD, volumes in mL) in the volume's own grid.

Output: `OUT/<case_id>.npz` (written atomically), `OUT/split.csv` (case_id,split), `OUT/prepare.json`
(settings, structures, prepared and skipped cases, split sizes); both written atomically too.

Splits: train / val / test, grouped by case (a case is one patient's volume). Val chooses (the
best checkpoint, early stopping), test reports. Where the input holds a split (`--splits FILE`,
default `INPUT/split.csv` when present: columns case_id,split with train / val / test), every
prepared case must be listed there and keeps its split; a split the file lacks (often val) is drawn
from its train cases with its fraction. Otherwise a case is test when a hash of (seed, id) falls
under `--test-fraction`, val when it falls in the next `--val-fraction`, so a case's split depends
only on its id and the seed, and adding cases never moves old ones.

The npz arrays are listed in `sensorium.recipes.cardiac.reader` (the layout, and how it is read).

Bad input (`on_bad_case`: `error` raises one DataError naming the file; `skip` logs, counts and
lists it in prepare.json): unreadable or corrupt files, non-label volumes (non-integer values or
unknown label values), empty volumes, degenerate affines or an affine that disagrees with the
header's voxel sizes, missing structures, and structures with too few voxels for a surface.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
import zlib
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.processes import process_pool
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.cardiac.reader import (
    CARDIAC_STRUCTURES,
    case_path,
    read_label_map,
    write_split_csv,
)

log = logging.getLogger("sensorium.data.cardiac")

# --- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareConfig:
    structures: tuple[str, ...] = CARDIAC_STRUCTURES
    label_values: tuple[int, ...] | None = None
    """Label value of each structure; None = 1..C."""
    surface_points: int = 16384
    """Surface samples kept per case; the paper config feeds 8192 of them to the encoder."""
    volume_points: int = 32768
    near_points: int = 32768
    near_sigmas: tuple[float, float] = (0.01, 0.05)
    """Gaussian offsets of near-surface points (normalised units; a 128-voxel heart has voxels of
    about 0.015, so about half a voxel and a few voxels)."""
    margin: float = 0.9
    """The surfaces' bounding box is scaled into [-margin, margin]^3, leaving room for near points."""
    min_voxels: int = 20
    """Fewer voxels than this for a structure is bad input: no meaningful surface."""
    grid_resolution: int = 32
    """SDF grid per case (R^3 points over [-1, 1]^3; 0: none). The mean-shape baseline averages the
    training cases' grids; 32^3 costs about as much as 32k volume points."""
    candidates: int = 6
    """Triangles tried per point by the SDF labeller (see sensorium.data.sdf.MaskSdf)."""
    seed: int = 0

    @property
    def values(self) -> tuple[int, ...]:
        return self.label_values or tuple(range(1, len(self.structures) + 1))


# --- reading and validation -----------------------------------------------------------------------
def case_id_of(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def load_label_volume(path: str | Path, config: PrepareConfig = PrepareConfig()
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one label volume: (labels (X, Y, Z) int64, affine (4, 4) float64).

    Raises DataError(path, problem) for anything that is not a usable label volume of the
    configured structures (see the module docstring).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as e:
        raise DataError(path, f"cannot read as NIfTI ({type(e).__name__}: {e}); is the file corrupt "
                              "or truncated?") from e

    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) exports are common
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3-D label volume, got shape {data.shape}")
    if data.size == 0:
        raise DataError(path, f"empty volume: shape {data.shape}")
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data) | (data != np.round(data))
        if bad.any():
            example = data[bad].flat[0]
            raise DataError(path, f"holds non-integer values (e.g. {example!r}, {int(bad.sum())} voxels): an "
                                  "intensity image, not a label volume")
    elif data.dtype.kind not in "iub":
        raise DataError(path, f"unsupported voxel type {data.dtype}; expected integer labels")
    labels = data.astype(np.int64)

    present = np.unique(labels)
    unknown = sorted(set(present.tolist()) - {0, *config.values})
    if unknown:
        shown = unknown[:8] + (["..."] if len(unknown) > 8 else [])
        raise DataError(path, f"label values {shown} ({len(unknown)} unknown) are neither background (0) nor "
                              f"a structure's label {list(config.values)}: not a label volume of these "
                              "structures (intensities? another label map? pass --labels)")
    if not (labels != 0).any():
        raise DataError(path, "empty volume: no labelled voxel")

    _check_geometry(path, image)
    counts = np.bincount(labels.ravel(), minlength=max(config.values) + 1)
    missing = [n for n, v in zip(config.structures, config.values) if counts[v] == 0]
    if missing:
        raise DataError(path, f"missing structures {missing} (no voxel with their labels)")
    small = {n: int(counts[v]) for n, v in zip(config.structures, config.values)
             if counts[v] < config.min_voxels}
    if small:
        raise DataError(path, "structures with too few voxels for a surface "
                              f"(min_voxels={config.min_voxels}): {small}")
    return labels, np.asarray(image.affine, dtype=np.float64)


def _check_geometry(path, image) -> None:
    from sensorium.data.sdf import check_affine

    affine = np.asarray(image.affine, dtype=np.float64)
    try:
        check_affine(affine)
    except ValueError as e:
        raise DataError(path, f"unusable voxel-to-world transform: {e}") from e
    header = image.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    both = sform is not None and qform is not None and sform_code and qform_code
    if both and not np.allclose(sform, qform, atol=1e-3, rtol=1e-4):
        raise DataError(path, f"sform and qform disagree (sform {np.round(sform, 4).tolist()}, qform "
                              f"{np.round(qform, 4).tolist()}): which voxel-to-world transform is right?")
    affine_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    header_spacing = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    if not np.allclose(affine_spacing, header_spacing, rtol=1e-3, atol=1e-4):
        raise DataError(path, f"the affine's voxel sizes {np.round(affine_spacing, 4).tolist()} mm disagree "
                              f"with the header's pixdim {np.round(header_spacing, 4).tolist()} mm")


# --- normalisation --------------------------------------------------------------------------------
def normalisation(vertices: np.ndarray, margin: float) -> tuple[float, np.ndarray]:
    """(scale, offset) that map the bounding box of world points (N, 3) into [-margin, margin]^3."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    offset = (lo + hi) / 2.0
    scale = float((hi - lo).max() / 2.0 / margin)
    return scale, offset


def normalise(world: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """World (N, 3) -> normalised (N, 3)."""
    return (world - offset) / scale


def denormalise(points: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """Normalised (N, 3) -> world (N, 3); the inverse of `normalise`."""
    return points * scale + offset


# --- one case -------------------------------------------------------------------------------------
def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def prepare_case(path: str | Path, config: PrepareConfig = PrepareConfig()) -> dict[str, np.ndarray]:
    """Surface and SDF samples of one label volume; the arrays of its npz (module docstring)."""
    from sensorium.data.sdf import LabelSdf, concatenate_meshes, sample_surface

    labels, affine = load_label_volume(path, config)
    case_id = case_id_of(path)
    rng = np.random.default_rng([config.seed, zlib.crc32(case_id.encode())])
    sdf = LabelSdf(labels, affine, config.values, candidates=config.candidates)
    meshes = sdf.meshes
    union, owner = concatenate_meshes(meshes)
    scale, offset = normalisation(union.vertices, config.margin)

    # Encoder input: area-weighted over every structure's surface together.
    world, normals, face = sample_surface(union, config.surface_points, rng)
    surface_points, surface_labels = normalise(world, scale, offset), owner[face]

    volume = rng.uniform(-1.0, 1.0, size=(config.volume_points, 3))

    near, near_labels = [], []
    for c, count in enumerate(_split_evenly(config.near_points, len(meshes))):
        base, _, _ = sample_surface(meshes[c], count, rng)
        sigma = np.where(np.arange(count) < count // 2, *config.near_sigmas)[:, None]  # (count, 1)
        near.append(normalise(base, scale, offset) + rng.normal(size=(count, 3)) * sigma)
        near_labels.append(np.full(count, c, dtype=np.int64))
    near = np.clip(np.concatenate(near), -1.0, 1.0)

    def label(points: np.ndarray) -> np.ndarray:  # normalised (N, 3) -> (N, C) normalised SDF
        return (sdf(denormalise(points, scale, offset)) / scale).astype(np.float32)

    arrays = {
        "surface_points": surface_points.astype(np.float32),
        "surface_normals": normals.astype(np.float32),
        "surface_labels": surface_labels.astype(np.int64),
        "vol_points": volume.astype(np.float32),
        "vol_sdf": label(volume),
        "near_points": near.astype(np.float32),
        "near_sdf": label(near),
        "near_labels": np.concatenate(near_labels),
        "scale": np.float64(scale),
        "offset": offset.astype(np.float64),
        "class_names": np.array(config.structures),
        "label_values": np.array(config.values, dtype=np.int64),
        "case_id": np.array(case_id),
        "spacing": np.linalg.norm(affine[:3, :3], axis=0),
        "affine": affine,
        "shape": np.array(labels.shape, dtype=np.int64),
        "near_sigmas": np.array(config.near_sigmas, dtype=np.float64),
    }
    if config.grid_resolution:
        R = config.grid_resolution
        axis = np.linspace(-1.0, 1.0, R)
        grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)  # (R^3, 3) x-major
        arrays["grid_sdf"] = label(grid).reshape(R, R, R, -1)  # (R, R, R, C)
    lo, hi = voxel_crop(affine, labels.shape, scale, offset)
    arrays["voxel_labels"] = structure_index_volume(labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], config.values)
    arrays["voxel_origin"] = lo
    return arrays


def voxel_crop(affine: np.ndarray, shape: tuple[int, ...], scale: float, offset: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) voxel indices (3,) each, hi exclusive: the box of voxels whose centres can fall in
    the normalised cube [-1, 1]^3, clipped to the volume. Every labelled voxel is inside it (the
    surfaces between labelled and background voxels span [-margin, margin]^3)."""
    corners = np.array(np.meshgrid(*[(-1.0, 1.0)] * 3, indexing="ij")).reshape(3, -1).T  # (8, 3) normalised
    world = denormalise(corners, scale, offset)
    index = np.linalg.solve(affine[:3, :3], (world - affine[:3, 3]).T).T  # (8, 3) voxel coordinates
    upper = np.asarray(shape, dtype=np.int64)
    lo = np.clip(np.floor(index.min(axis=0)), 0, upper - 1).astype(np.int64)
    hi = np.clip(np.ceil(index.max(axis=0)) + 1, 1, upper).astype(np.int64)
    return lo, hi


def structure_index_volume(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Label values -> structure index + 1 (0 background), uint8 (uint16 past 254 structures)."""
    lookup = np.zeros(max(values) + 1, dtype=np.uint8 if len(values) < 255 else np.uint16)
    lookup[list(values)] = np.arange(1, len(values) + 1)
    return lookup[labels]


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a temporary file in the same directory, then os.replace: a kill or a full
    disk leaves either the old file or none, never a truncated one. Uncompressed, so a reader
    pulls one array without inflating the others."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def process_case(path: str | Path, out_dir: str | Path, config: PrepareConfig) -> tuple[str, float]:
    """prepare_case + atomic write to out_dir/<case_id>.npz; returns (case_id, seconds)."""
    start = time.perf_counter()
    arrays = prepare_case(path, config)
    case_id = str(arrays["case_id"])
    write_npz_atomic(case_path(out_dir, case_id), arrays)
    return case_id, time.perf_counter() - start


# --- splits ---------------------------------------------------------------------------------------
SPLITS = ("train", "val", "test")


def _unit_hash(key: str) -> float:
    """A uniform number in [0, 1) from a string: the first 8 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def assign_splits(case_ids: list[str], val_fraction: float, seed: int, *, test_fraction: float = 0.0,
                  given: dict[str, str] | None = None) -> dict[str, str]:
    """case_id -> "train" | "val" | "test" (module docstring).

    Cases in `given` keep its split. A split `given` lacks is drawn from the train cases (all cases
    without `given`): test where a hash u in [0, 1) of (seed, id) (SHA-256) is under test_fraction, val where
    it lies in the next val_fraction, so a case's split never changes as cases are added. While
    enough train cases remain (one must stay), a drawn split with a fraction > 0 gets at least one.
    """
    given = given or {}
    splits = {cid: given.get(cid, "train") for cid in case_ids}
    drawn = [(name, fraction) for name, fraction in (("test", test_fraction), ("val", val_fraction))
             if fraction > 0 and name not in given.values()]
    candidates = [cid for cid in case_ids if splits[cid] == "train"]
    u = {cid: _unit_hash(f"{seed}:{cid}") for cid in candidates}
    start = 0.0
    for name, fraction in drawn:
        for cid in candidates:
            if start <= u[cid] < start + fraction:
                splits[cid] = name
        start += fraction
    for name, _ in drawn:  # a tiny dataset still gets one case per split, lowest hash first
        train = sorted((cid for cid in candidates if splits[cid] == "train"), key=u.get)
        if name not in splits.values() and len(train) >= 2:
            splits[train[0]] = name
    if candidates and "train" not in splits.values():
        splits[max(candidates, key=u.get)] = "train"
    return splits


def read_given_splits(path: str | Path, case_ids: list[str]) -> dict[str, str]:
    """{case_id: split} for the prepared cases from the input's own split file (columns case_id,
    split); each of them must be listed, with a split of train / val / test."""
    from sensorium.recipes.cardiac.reader import read_split_csv

    listed = {cid: split for split, ids in read_split_csv(path).items() for cid in ids}
    unknown = sorted(set(listed.values()) - set(SPLITS))
    if unknown:
        raise DataError(path, f"unknown split names {unknown}; use {list(SPLITS)}")
    missing = [cid for cid in case_ids if cid not in listed]
    if missing:
        shown = missing[:8] + (["..."] if len(missing) > 8 else [])
        raise DataError(path, f"{len(missing)} prepared case(s) are not listed: {shown}; list every case, or "
                              "remove the file to draw splits by --val-fraction / --test-fraction")
    return {cid: listed[cid] for cid in case_ids}


# --- command line ---------------------------------------------------------------------------------
def find_cases(input_dir: str | Path) -> list[Path]:
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DataError(input_dir, "input directory does not exist")
    paths = sorted(p for p in input_dir.iterdir()
                   if p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith("."))
    ids = [case_id_of(p) for p in paths]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(input_dir, f"case ids {duplicates} appear twice (as .nii and .nii.gz?)")
    if not paths:
        raise DataError(input_dir, "no .nii.gz or .nii files")
    return paths


def run(input_dir: str | Path, out_dir: str | Path, config: PrepareConfig = PrepareConfig(), workers: int = 1,
        val_fraction: float = 0.2, on_bad_case: OnBadSample = "error", progress: bool = True,
        test_fraction: float = 0.2, splits_file: str | Path | None = None) -> dict:
    """Prepare every case of input_dir into out_dir; returns the summary written to prepare.json.
    splits_file: the input's own split (default input_dir/split.csv when it exists)."""
    from tqdm import tqdm

    from sensorium.engine.checkpoint import atomic_write, atomic_write_json

    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(name, f"must be in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError("val_fraction + test_fraction", f"{val_fraction + test_fraction} leaves no train cases")
    paths = find_cases(input_dir)
    if splits_file is None and (Path(input_dir) / "split.csv").is_file():
        splits_file = Path(input_dir) / "split.csv"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, float] = {}
    skipped: dict[str, str] = {}

    def finish(path: Path, result=None, error: DataError | None = None) -> None:
        if error is None:
            done[result[0]] = result[1]
            return
        handle_bad_sample(error, on_bad_case)  # raises under "error"
        skipped[path.name] = str(error)

    bar = tqdm(total=len(paths), desc="prepare cardiac", unit="case", disable=not progress)
    if workers <= 1:
        for path in paths:
            try:
                result = process_case(path, out_dir, config)
            except DataError as e:
                finish(path, error=e)
            else:
                finish(path, result)
            bar.update()
    else:
        with process_pool(workers) as pool:
            futures = {pool.submit(process_case, p, out_dir, config): p for p in paths}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except DataError as e:
                    if on_bad_case == "error":
                        for other in futures:
                            other.cancel()
                    finish(futures[future], error=e)
                else:
                    finish(futures[future], result)
                bar.update()
    bar.close()

    given = read_given_splits(splits_file, sorted(done)) if splits_file is not None else None
    splits = assign_splits(sorted(done), val_fraction, config.seed, test_fraction=test_fraction, given=given)
    atomic_write(out_dir / "split.csv", lambda tmp: write_split_csv(tmp, splits))
    summary = {
        "structures": list(config.structures),
        "label_values": list(config.values),
        "sdf_sign": "negative inside",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "prepared": len(done),
        "skipped": len(skipped),
        "skipped_cases": skipped,
        "splits": {s: sum(v == s for v in splits.values()) for s in SPLITS},
        "split_source": str(splits_file) if splits_file is not None else "hash of (seed, case id)",
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seconds_per_case": float(np.mean(list(done.values()))) if done else None,
    }
    atomic_write_json(out_dir / "prepare.json", summary)
    if skipped:
        log.warning("skipped %d of %d cases (listed in %s)", len(skipped), len(paths),
                    out_dir / "prepare.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium prepare cardiac", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="directory of .nii.gz / .nii label volumes")
    parser.add_argument("--out", required=True, help="output directory for <case_id>.npz, split.csv")
    parser.add_argument("--workers", type=int, default=1, help="cases prepared in parallel (processes)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of cases in val (chooses the checkpoint); drawn by a hash of the case id")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of cases in test (reports); drawn by a hash of the case id")
    parser.add_argument("--splits", help="the input's own split (case_id,split with train / val / test; "
                                         "default: INPUT/split.csv when present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-bad-case", choices=("error", "skip"), default="error")
    parser.add_argument("--labels",
                        help="labels.json (default: INPUT/labels.json, else the 10 default structures)")
    parser.add_argument("--surface-points", type=int, default=PrepareConfig.surface_points)
    parser.add_argument("--volume-points", type=int, default=PrepareConfig.volume_points)
    parser.add_argument("--near-points", type=int, default=PrepareConfig.near_points)
    parser.add_argument("--near-sigmas", type=float, nargs=2, default=PrepareConfig.near_sigmas,
                        metavar=("S1", "S2"),
                        help="Gaussian offsets of near-surface points, normalised units (half the points each)")
    parser.add_argument("--grid-resolution", type=int, default=PrepareConfig.grid_resolution,
                        help="SDF grid per case for the mean-shape baseline (R^3 points; 0: none)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    config = PrepareConfig(surface_points=args.surface_points, volume_points=args.volume_points,
                           near_points=args.near_points, near_sigmas=tuple(args.near_sigmas),
                           grid_resolution=args.grid_resolution, seed=args.seed)
    label_map = Path(args.labels) if args.labels else Path(args.input) / "labels.json"
    if args.labels or label_map.exists():
        names, values = read_label_map(label_map)
        config = replace(config, structures=names, label_values=values)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args.input, args.out, config, args.workers, args.val_fraction, args.on_bad_case,
                  progress=not args.no_progress, test_fraction=args.test_fraction, splits_file=args.splits)
    splits = summary["splits"]
    print(f"prepared {summary['prepared']} cases ({splits['train']} train, {splits['val']} val, "
          f"{splits['test']} test; splits from {summary['split_source']}), "
          f"skipped {summary['skipped']}; {len(config.structures)} structures; "
          f"{summary['seconds_per_case'] or 0:.2f} s per case -> {args.out}")
    return 0
