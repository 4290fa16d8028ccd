"""Reader for the Intel Robotic Welding Multimodal Dataset layout.

    ROOT/manifest.csv       CATEGORY, SUBDIRS, SPLIT (+ WELD_TYPE, THICKNESS_MM, STEEL_TYPE, SAMPLES,
                            CURRENT_A, VOLTAGE_V, GAS_BAR, ROBOT_SPEED_CPM, DIRECTORY, kept as metadata)
    ROOT/<SUBDIRS>/         one weld run; SUBDIRS = <session folder>/<run_id>, e.g.
                            undercut_4_03-15-23_Fe410/03-15-23-0080-05
        <run_id>.avi|.mp4   process video
        <run_id>.flac|.wav  process audio
        <run_id>.csv        sensor log: Date, Time, Part No, Pressure, CO2 Weld Flow, Feed,
                            Primary Weld Current, Wire Consumed, Secondary Weld Voltage, Remarks
        images/*.jpg|*.png  post-weld photos from several angles (usually 5)

Two stages, so a bad dataset fails in seconds rather than an hour into training:
`read_manifest` runs the cheap checks (manifest columns and categories, directories and files
present, sensor CSV headers; nothing decoded), `WeldingDataset` decodes a sample when it is first
read. Each problem is one `DataError(path, problem)`; under `on_bad_sample="skip"` the sample is
logged, counted and dropped instead.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.feature_cache import FeatureStore
from sensorium.data.media import audio_seconds_for, log_mel, read_audio, read_image, read_video
from sensorium.errors import ConfigError, DataError

log = logging.getLogger("sensorium.data")

# --- labels --------------------------------------------------------------------------------------

# The label order, defined once: label i is WELDING_LABELS[i].
WELDING_LABELS: tuple[str, ...] = (
    "Good", "Excessive_Convexity", "Undercut", "Lack_of_Fusion", "Porosity_w_Excessive_Penetration",
    "Porosity", "Spatter", "Burnthrough", "Excessive_Penetration", "Crater_Cracks", "Warping", "Overlap",
)
MODALITIES: tuple[str, ...] = ("video", "images", "audio", "sensor")


def _category_key(name: str) -> str:
    # Case, spaces, underscores (and any other punctuation: "w/", "-") do not matter.
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Other spellings of the categories in published copies of the dataset: the session folder names and
# the hackathon release use good_weld / burn_through; Intel's sensor classifier uses "Good Weld",
# "Burnthrough Weld", "Warping Weld", "Porosity w/ EP", "Porosity with Excessive Penetration".
_ALIASES = {
    "good_weld": "Good", "Good Weld": "Good",
    "Burnthrough Weld": "Burnthrough",  # burn_through is Burnthrough once "_" is ignored
    "Warping Weld": "Warping",
    "Porosity w/ EP": "Porosity_w_Excessive_Penetration",
    "Porosity with Excessive Penetration": "Porosity_w_Excessive_Penetration",
}
_LABEL_OF = {_category_key(name): i for i, name in enumerate(WELDING_LABELS)}
_LABEL_OF.update({_category_key(alias): WELDING_LABELS.index(name) for alias, name in _ALIASES.items()})


def category_to_label(name: str) -> int:
    """Label index of a category name; case-, space- and underscore-insensitive, with the published
    aliases (good_weld, burn_through, "Porosity w/ EP", ...). Unknown names raise ValueError."""
    label = _LABEL_OF.get(_category_key(name))
    if label is None:
        raise ConfigError("CATEGORY", f"unknown category {name!r}; known: {', '.join(WELDING_LABELS)}")
    return label


# --- manifest ------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("CATEGORY", "SUBDIRS", "SPLIT")
SPLITS = ("TRAIN", "VAL", "TEST")  # the published manifest has all three
TIME_COLUMN = "Time"
# The sensor channels, in the order of the published CSV header.
SENSOR_COLUMNS: tuple[str, ...] = (
    "Pressure", "CO2 Weld Flow", "Feed", "Primary Weld Current", "Wire Consumed", "Secondary Weld Voltage",
)
VIDEO_SUFFIXES = (".avi", ".mp4")
AUDIO_SUFFIXES = (".flac", ".wav")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class WeldingRecord:
    """One weld run as the manifest lists it; a modality path is None (images: []) when missing."""

    sample_id: str  # the SUBDIRS value, unique in the manifest
    directory: Path  # ROOT / SUBDIRS
    run_id: str  # the last part of SUBDIRS; the modality files are named after it
    label: int  # index into WELDING_LABELS
    category: str  # CATEGORY as written in the manifest
    split: str  # "TRAIN", "VAL" or "TEST"
    metadata: dict[str, str]  # every other manifest column, as written
    video: Path | None
    audio: Path | None
    sensor: Path | None
    images: list[Path]  # sorted by name
    line: int = 0  # line of the manifest (the header is line 1)

    @property
    def present(self) -> tuple[bool, bool, bool, bool]:
        """Which modality files exist, in MODALITIES order."""
        return (self.video is not None, bool(self.images), self.audio is not None, self.sensor is not None)


class WeldingRecords(list):
    """A list of WeldingRecord that remembers its manifest and the samples `read_manifest` skipped
    (`skipped`: one DataError per dropped sample, empty under on_bad_sample="error")."""

    def __init__(self, records=(), manifest: Path | None = None, skipped: Sequence[DataError] = ()):
        super().__init__(records)
        self.manifest = manifest
        self.skipped = list(skipped)


def read_manifest(root: str | Path, on_bad_sample: OnBadSample = "error",
                  allow_missing_modalities: bool = False,
                  sensor_columns: Sequence[str] = SENSOR_COLUMNS) -> WeldingRecords:
    """The cheap checks that run before training (no decoding; seconds for the full dataset).

    Checks: manifest.csv exists and has CATEGORY, SUBDIRS, SPLIT; every category is known and every
    SPLIT is TRAIN, VAL or TEST; SUBDIRS values are unique and exist under `root`; each modality
    file is present and not empty (`<run_id>.avi|.mp4`, `<run_id>.flac|.wav`, `<run_id>.csv`,
    `images/*.jpg|*.png`; when `<run_id>.<ext>` is absent, the directory's only file of that kind
    is used, as in copies that rename files to weld.avi / sensor.csv); the sensor CSV header (its
    first line only) has `Time` and `sensor_columns`.

    A problem with the manifest itself (missing file or column) always raises. A problem with one
    sample raises `DataError` naming the file (the manifest and its line for manifest rows) under
    on_bad_sample="error"; under "skip" the sample is logged and dropped, and the returned list's
    `skipped` holds one DataError per dropped sample. With `allow_missing_modalities`, a missing
    modality file is not an error: its path is None (images: []) and the dataset marks it absent;
    a sample with no modality at all is still an error.
    """
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        problem = "manifest not found" if root.is_dir() else f"data root {root} does not exist"
        raise DataError(manifest, problem)
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(manifest, f"missing column(s) {', '.join(missing)}; the header has "
                                      f"{', '.join(columns) or 'nothing'}")
        # (line in the file, row): DictReader skips blank lines, so count lines as it reads them.
        rows = [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for row in reader]

    records, skipped, seen = [], [], {}
    root_resolved = root.resolve()
    for line, row in rows:
        try:
            record = _check_row(row, line, root, root_resolved, manifest, seen, allow_missing_modalities,
                                sensor_columns)
        except DataError as e:
            handle_bad_sample(e, on_bad_sample)
            skipped.append(e)
            continue
        seen[record.sample_id] = line
        records.append(record)
    if skipped:
        log.warning("%s: skipped %d of %d samples (on_bad_sample=skip)", manifest, len(skipped), len(rows))
    return WeldingRecords(records, manifest=manifest, skipped=skipped)


def _check_row(row: dict[str, str], line: int, root: Path, root_resolved: Path, manifest: Path,
               seen: dict[str, int], allow_missing: bool, sensor_columns: Sequence[str]) -> WeldingRecord:
    where = f"line {line}"
    try:
        label = category_to_label(row["CATEGORY"])
    except ConfigError as e:
        raise DataError(manifest, f"{where}: {e.problem}") from None
    split = row["SPLIT"].upper()
    if split not in SPLITS:
        raise DataError(manifest, f"{where}: unknown SPLIT {row['SPLIT']!r} (expected {', '.join(SPLITS)})")
    sample_id = row["SUBDIRS"].replace("\\", "/").strip("/")
    if not sample_id:
        raise DataError(manifest, f"{where}: empty SUBDIRS")
    if sample_id in seen:
        raise DataError(manifest, f"{where}: SUBDIRS {sample_id!r} repeats line {seen[sample_id]}")
    directory = root / sample_id
    if not directory.resolve().is_relative_to(root_resolved):
        raise DataError(manifest, f"{where}: SUBDIRS {sample_id!r} points outside the data root")
    if not directory.is_dir():
        raise DataError(directory, f"sample directory (manifest {where}) does not exist")

    run_id = directory.name
    video = _find_file(directory, run_id, VIDEO_SUFFIXES, "video", allow_missing)
    audio = _find_file(directory, run_id, AUDIO_SUFFIXES, "audio", allow_missing)
    sensor = _find_file(directory, run_id, (".csv",), "sensor CSV", allow_missing)
    images = _find_images(directory, allow_missing)
    if video is None and audio is None and sensor is None and not images:
        raise DataError(directory, "no modality file at all (video, images, audio, sensor CSV)")
    if sensor is not None:
        check_sensor_header(sensor, sensor_columns)
    metadata = {k: v for k, v in row.items() if k not in REQUIRED_COLUMNS}
    return WeldingRecord(sample_id=sample_id, directory=directory, run_id=run_id, label=label,
                         category=row["CATEGORY"], split=split, metadata=metadata, video=video, audio=audio,
                         sensor=sensor, images=images, line=line)


def _find_file(directory: Path, run_id: str, suffixes: Sequence[str], kind: str,
               allow_missing: bool) -> Path | None:
    for suffix in suffixes:
        path = directory / f"{run_id}{suffix}"
        if path.is_file():
            break
    else:
        candidates = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if len(candidates) > 1:
            raise DataError(directory, f"no {run_id}{suffixes[0]} and several {kind} files to choose from: "
                                       f"{', '.join(p.name for p in candidates)}")
        if not candidates:
            if allow_missing:
                return None
            expected = " or ".join(f"{run_id}{s}" for s in suffixes)
            raise DataError(directory / f"{run_id}{suffixes[0]}",
                            f"missing {kind} file (expected {expected})")
        path = candidates[0]
    if path.stat().st_size == 0:
        raise DataError(path, f"{kind} file is empty")
    return path


def _find_images(directory: Path, allow_missing: bool) -> list[Path]:
    folder = directory / "images"
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
        if folder.is_dir() else []
    if not images and not allow_missing:
        raise DataError(folder, "no post-weld images (images/*.jpg or *.png)")
    for p in images:
        if p.stat().st_size == 0:
            raise DataError(p, "image file is empty")
    return images


def check_sensor_header(path: Path, sensor_columns: Sequence[str] = SENSOR_COLUMNS) -> list[str]:
    """The CSV header (first line only) as stripped names; DataError when a needed column is missing."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    missing = [c for c in (TIME_COLUMN, *sensor_columns) if c not in header]
    if missing:
        raise DataError(path, f"sensor CSV lacks column(s) {', '.join(repr(c) for c in missing)}; "
                              f"header: {', '.join(header) or '(empty)'}")
    return header


def select_split(records: Sequence[WeldingRecord], split: str,
                 manifest: Path | None = None) -> WeldingRecords:
    """The records of one split ("TRAIN", "VAL", "TEST"; case-insensitive); DataError when empty."""
    split = split.upper()
    manifest = manifest or getattr(records, "manifest", None) or "manifest.csv"
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise DataError(manifest, f"split {split} has no samples")
    return WeldingRecords(chosen, manifest=getattr(records, "manifest", None))


# --- sensor series -------------------------------------------------------------------------------


def read_sensor_csv(path: Path, columns: Sequence[str] = SENSOR_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Times in seconds (N,) float64 and values (N, C) float64 of `columns`, the whole file.

    `Time` is either seconds or the published clock format HH:MM:SS.fff (a roll-over past midnight
    is unwrapped). Missing columns, non-numeric cells, and NaN or empty values are DataErrors.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            rows = [r for r in csv.reader(f) if r]
    except OSError as e:
        raise DataError(path, f"cannot read sensor CSV ({e})") from None
    if not rows:
        raise DataError(path, "sensor CSV is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in (TIME_COLUMN, *columns) if c not in header]
    if missing:
        raise DataError(path, f"sensor CSV lacks column(s) {', '.join(repr(c) for c in missing)}")
    body = rows[1:]
    if len(body) < 2:
        raise DataError(path, f"sensor CSV has {len(body)} data row(s); need at least 2")
    widths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    if (widths != len(header)).any():
        bad = int(np.argmax(widths != len(header)))
        raise DataError(path, f"line {bad + 2} has {widths[bad]} fields, the header has {len(header)}")
    cells = np.array(body, dtype=str)  # (N, F)

    values = np.strings.strip(cells[:, [header.index(c) for c in columns]])  # (N, C)
    empty = values == ""
    try:
        x = np.where(empty, "nan", values).astype(np.float64)
    except ValueError:
        r, c = next((r, c) for r, c in np.ndindex(values.shape) if not _is_float(values[r, c]))
        raise DataError(path, f"line {r + 2}, column {columns[c]!r}: not a number: "
                              f"{values[r, c]!r}") from None
    bad = ~np.isfinite(x)
    if bad.any():
        per_column = bad.sum(axis=0)
        c = int(np.argmax(per_column > 0))
        r = int(np.argmax(bad[:, c]))
        raise DataError(path, f"column {columns[c]!r} has {per_column[c]} NaN/empty value(s) "
                              f"(first at line {r + 2})")
    return _parse_times(np.strings.strip(cells[:, header.index(TIME_COLUMN)]), path), x


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_times(times: np.ndarray, path: Path) -> np.ndarray:
    try:
        return times.astype(np.float64)  # already seconds
    except ValueError:
        pass
    hours, _, rest = np.strings.partition(times, ":")
    minutes, _, seconds = np.strings.partition(rest, ":")
    try:
        t = hours.astype(np.float64) * 3600 + minutes.astype(np.float64) * 60 + seconds.astype(np.float64)
    except ValueError:
        raise DataError(path, f"column {TIME_COLUMN!r} is neither seconds nor HH:MM:SS.fff "
                              f"(first value {times[0]!r})") from None
    # A log that runs past midnight restarts at 00:00:00: unwrap it.
    t += 86400.0 * np.concatenate([[0], np.cumsum(np.diff(t) < -43200)])
    return t


def resample_series(t: np.ndarray, x: np.ndarray, length: int, path: Path | str = "") -> np.ndarray:
    """(N, C) samples at times t (N,) -> (length, C) at `length` evenly spaced times from t[0] to
    t[-1], by linear interpolation (all channels at once).

    Timestamps that go backwards or do not advance (a clock reset; ~1% of the published logs) carry
    no usable time axis: rows are then taken as evenly spaced, with a warning.
    """
    steps = np.diff(t)
    if (steps < 0).any() or t[-1] <= t[0]:
        log.warning("%s: sensor timestamps are not increasing; treating rows as evenly spaced", path)
        t = np.arange(len(t), dtype=np.float64)
    grid = np.linspace(t[0], t[-1], length)
    right = np.clip(np.searchsorted(t, grid, side="right"), 1, len(t) - 1)  # (length,)
    left = right - 1
    span = t[right] - t[left]
    w = np.divide(grid - t[left], span, out=np.zeros_like(grid), where=span > 0).clip(0, 1)[:, None]
    return x[left] * (1 - w) + x[right] * w  # (length, C)


@dataclass
class SensorStats:
    """Per-column mean and standard deviation (float32, (C,)) of the sensor channels."""

    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> SensorStats:
        return cls(tuple(d["columns"]), np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def compute_sensor_stats(records: Sequence[WeldingRecord], columns: Sequence[str] = SENSOR_COLUMNS,
                         on_bad_sample: OnBadSample = "error", min_std: float = 1e-6) -> SensorStats:
    """Mean and std of each sensor column over every row of the given records' CSVs.

    Pass the TRAIN records only: statistics that see TEST leak it into training. Each CSV is read
    once; sums and sums of squares are pooled in float64. Records without a sensor file are left
    out; a std below `min_std` (a constant column) is raised to it so standardising stays finite.
    """
    total = np.zeros(len(columns))
    total_sq = np.zeros(len(columns))
    count = 0
    for r in records:
        if r.sensor is None:
            continue
        try:
            _, x = read_sensor_csv(r.sensor, columns)
        except DataError as e:
            handle_bad_sample(e, on_bad_sample)
            continue
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
        count += len(x)
    if count == 0:
        raise DataError(getattr(records, "manifest", None) or "records",
                        "no readable sensor CSV to compute sensor statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return SensorStats(tuple(columns), mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32))


# --- preprocessing and the dataset ---------------------------------------------------------------


@dataclass
class WeldingPreprocess:
    """How a sample becomes tensors. The defaults are the demo sizes: small enough that four
    encoders train on 2 CPU cores in minutes, large enough that the synthetic signatures (a 2 px
    pore, a spark, a 1 s crackle burst) survive; see PAPER_PREPROCESS for the paper's."""

    num_frames: int = 8  # video frames sampled uniformly over the clip
    frame_size: int = 48  # frames are resized to frame_size x frame_size
    num_images: int = 3  # post-weld photos (angles) chosen evenly from the sorted list
    image_size: int = 48
    sample_rate: int = 8000  # audio is resampled to this rate (Hz)
    n_mels: int = 32
    win_ms: float = 50.0  # STFT window; demo uses a long hop so 64 frames cover the whole 1.6 s clip
    hop_ms: float = 25.0
    audio_frames: int = 64  # spectrogram frames, centred crop or pad at the end
    sensor_length: int = 128  # sensor series resampled over its time column to this many steps
    sensor_columns: list[str] = field(default_factory=lambda: list(SENSOR_COLUMNS))  # time column excluded


# The preprocessing fields that decide each modality's tensor (a frozen-feature cache is keyed by them,
# so changing the sensor length does not recompute the video features).
MODALITY_PREPROCESS: dict[str, tuple[str, ...]] = {
    "video": ("num_frames", "frame_size"),
    "images": ("num_images", "image_size"),
    "audio": ("sample_rate", "n_mels", "win_ms", "hop_ms", "audio_frames"),
    "sensor": ("sensor_length", "sensor_columns"),
}


def modality_files(record: WeldingRecord, modality: str) -> list[Path]:
    """The files one modality of a record is read from (none when it is missing)."""
    files = {"video": [record.video], "images": record.images, "audio": [record.audio], "sensor": [record.sensor]}
    return [f for f in files[modality] if f is not None]


# The paper's sizes: V-JEPA 2 (16 frames, 224 px), DINOv2 (5 angles, 224 px), AST (16 kHz, 128 mel,
# 25 ms window, 10 ms hop, 1024 frames), sensor Transformer on 256 steps.
PAPER_PREPROCESS = WeldingPreprocess(num_frames=16, frame_size=224, num_images=5, image_size=224,
                                     sample_rate=16000, n_mels=128, win_ms=25.0, hop_ms=10.0,
                                     audio_frames=1024, sensor_length=256)


def choose_images(paths: Sequence[Path], num: int) -> list[Path]:
    """`num` of the sorted paths spread evenly; with fewer files than `num`, the last one repeats."""
    if len(paths) >= num:
        return [paths[i] for i in np.linspace(0, len(paths) - 1, num).round().astype(int)]
    return list(paths) + [paths[-1]] * (num - len(paths))


class WeldingDataset(Dataset):
    """Decoded, preprocessed welding samples. Item `i` is a dict of tensors:

        video    float32 (T, 3, H, W) in [0, 1]   T = num_frames sampled uniformly, H = W = frame_size
        images   float32 (N, 3, S, S) in [0, 1]   N = num_images angles chosen evenly from the sorted
                                                  files (fewer files than N: the last one repeats)
        audio    float32 (1, n_mels, audio_frames) log-mel power
        sensor   float32 (L, C)                    L = sensor_length, C = len(sensor_columns),
                                                  resampled over the time column, standardised with
                                                  `sensor_stats` (None: raw values)
        present  bool (4,)                         per MODALITIES; False: file missing, tensor zeros
        label    int64 ()                          index into WELDING_LABELS
        index    int64 ()                          i

    A file that cannot be decoded, or a sensor CSV with NaNs or missing columns, raises DataError
    under on_bad_sample="error"; under "skip" the item is None (logged; `collate_skipping` drops it
    and counts it in the batch). `cache=True` keeps each decoded item in memory (about 0.3 MB per
    sample at the demo sizes; meant for small datasets, and per worker process: use
    persistent_workers with num_workers > 0).

    `features` ({modality: FeatureStore}, `sensorium.data.feature_cache`): those modalities are not
    decoded; the item holds `<modality>_tokens` instead, their frozen encoder's output read from the
    store (video, audio: (L, D); images: (N, L, D), one token sequence per angle), and no
    `<modality>` key. A sample the store recorded as bad is a bad sample here too.
    """

    def __init__(self, records: Sequence[WeldingRecord], preprocess: WeldingPreprocess | None = None,
                 sensor_stats: SensorStats | None = None, on_bad_sample: OnBadSample = "error",
                 cache: bool = False, features: Mapping[str, FeatureStore] | None = None):
        self.records = list(records)
        self.preprocess = p = preprocess or WeldingPreprocess()
        if sensor_stats is not None and tuple(sensor_stats.columns) != tuple(p.sensor_columns):
            raise ConfigError("preprocess.sensor_columns", f"{p.sensor_columns} differ from the sensor "
                                                           f"statistics' columns {sensor_stats.columns}")
        self.sensor_stats = sensor_stats
        self.on_bad_sample = on_bad_sample
        self.cache = cache
        self._cache: dict[int, dict | None] = {}
        self.skipped: set[int] = set()  # indices found bad in this process
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.long)
        self._audio_seconds = audio_seconds_for(p.audio_frames, p.win_ms, p.hop_ms)
        self.features = dict(features or {})
        unknown = sorted(set(self.features) - set(MODALITIES))
        if unknown:
            raise ValueError(f"features for unknown modalities {unknown}")
        self._feature_rows = {m: [store.row(r.sample_id) for r in self.records] for m, store in self.features.items()}
        self.raw_modalities = tuple(m for m in MODALITIES if m not in self.features)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor] | None:
        if i in self._cache:
            return self._cache[i]
        try:
            item = self.load(self.records[i], self.raw_modalities)
            for m, store in self.features.items():
                item[f"{m}_tokens"] = torch.from_numpy(store.read(self._feature_rows[m][i]))
        except DataError as e:
            handle_bad_sample(e, self.on_bad_sample)
            self.skipped.add(i)
            item = None
        else:
            item["index"] = torch.tensor(i, dtype=torch.long)
        if self.cache:
            self._cache[i] = item
        return item

    def load(self, r: WeldingRecord, modalities: Sequence[str] = MODALITIES) -> dict[str, torch.Tensor]:
        """Decode and preprocess one record's `modalities` (no index); DataError on a bad file."""
        item = {m: self.decode(r, m) for m in modalities}
        item["present"] = torch.tensor(r.present, dtype=torch.bool)
        item["label"] = torch.tensor(r.label, dtype=torch.long)
        return item

    def decode(self, r: WeldingRecord, modality: str) -> torch.Tensor:
        """One modality of a record as the model's input (zeros when its file is missing)."""
        p = self.preprocess
        if modality == "video":
            return (read_video(r.video, p.num_frames, (p.frame_size, p.frame_size)) if r.video is not None
                    else torch.zeros(p.num_frames, 3, p.frame_size, p.frame_size))
        if modality == "images":
            return self._images(r.images) if r.images else torch.zeros(p.num_images, 3, p.image_size, p.image_size)
        if modality == "audio":
            return self._audio(r.audio) if r.audio is not None else torch.zeros(1, p.n_mels, p.audio_frames)
        if modality == "sensor":
            return (self._sensor(r.sensor) if r.sensor is not None
                    else torch.zeros(p.sensor_length, len(p.sensor_columns)))
        raise ValueError(f"unknown modality {modality!r}")

    def _images(self, paths: list[Path]) -> torch.Tensor:
        size = (self.preprocess.image_size, self.preprocess.image_size)
        chosen = choose_images(paths, self.preprocess.num_images)
        decoded = {path: read_image(path, size) for path in dict.fromkeys(chosen)}  # each file once
        return torch.stack([decoded[path] for path in chosen])  # (N, 3, S, S)

    def _audio(self, path: Path) -> torch.Tensor:
        p = self.preprocess
        wave = read_audio(path, p.sample_rate, max_seconds=self._audio_seconds)
        return log_mel(wave, p.sample_rate, p.n_mels, p.win_ms, p.hop_ms, num_frames=p.audio_frames)

    def _sensor(self, path: Path) -> torch.Tensor:
        p = self.preprocess
        t, x = read_sensor_csv(path, p.sensor_columns)
        x = resample_series(t, x, p.sensor_length, path)  # (L, C)
        if self.sensor_stats is not None:
            x = (x - self.sensor_stats.mean) / self.sensor_stats.std
        return torch.from_numpy(x.astype(np.float32))
