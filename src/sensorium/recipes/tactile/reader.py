"""Tactile frame sequences: the TacQuad reader (the layout AnyTouch stage 1 reads), a generic index
CSV reader, the Dataset and an object-level split.

**One sample contract.** Every sample is a 4-frame window t-3..t of one sensor's recording:

    frames  float32 (4, 3, S, S) in [0, 1], frames t-3, t-2, t-1, t, resized to S = image_size
    sensor  int64 ()  index into SENSORS = (gelsight, digit, duragel)
    label   int64 ()  indenter / object class, -1 when unknown (evaluation only, never for training)
    index   int64 ()  position of the sample in the dataset
    force, contact_mm, slip   float32 (), float32 (2,), int64 (): frame t's frame labels (below;
            evaluation only), NaN / NaN / -1 when unknown
    reference  float32 (3, S, S), only with `reference=True`: a frame of the same recording without
            contact (the gel, its lighting and markers as they are before the indenter touches;
            evaluation only: the probes can read features relative to it)

The static task uses frame t (`frames[:, STATIC_FRAME]`, "a static sample is one frame t"); the
dynamic task uses all four (frames t-3..t-1 seen, frame t predicted).

**TacQuad** (root with contact_indoor.csv, contact_outdoor.csv, data_indoor/, data_outdoor/): each
CSV row is `item, gs_start, gs_end, digit_start, digit_end, duragel_start, duragel_end` with no
header (AnyTouch parses every row as data; a header row with these names is also accepted);
ranges are inclusive and name the frames in contact, stored as
`data_<scene>/<item>/<sensor>/<t>.png` (t not zero-padded). By default a window lies inside the
contact range (t = start+3 .. end), so a range of fewer than 4 frames is an error. With
`reach_before_contact=True` windows end at every contact frame t >= 3 and may start up to 3 frames
before the range, exactly as AnyTouch's video dataset builds them (those frames must exist).

A window's **reference frame** is frame 0 of its recording when the contact range starts later
(frame 0 is then before contact) and the file exists; a recording in contact from frame 0 has none.

**Generic index CSV**: header `frame_0,frame_1,frame_2,frame_3,sensor[,label][,reference]`, one row
per window, frame paths relative to the CSV's folder (or absolute), sensor a name from SENSORS,
label an int or empty, reference a frame of the same recording without contact, or empty.

**Frame labels** (optional, evaluation only: the force / contact / slip probes): a CSV beside the
frames, `ROOT/frame_labels.csv` by default (`sensorium synth tactile` writes it; real TacQuad has
none, and then those probes are skipped with a message). One row per frame, header naming at least
`path,force_n,contact_x_mm,contact_y_mm,slip` (synth adds scene,item,sensor,frame):

    path           the frame file, relative to the CSV's folder (or absolute), as the windows name it
    force_n        normal force in newtons (0 without contact; empty: unknown)
    contact_x_mm, contact_y_mm   contact centre in mm from the raw frame's top-left corner, x right,
                   y down; both empty without contact (or unknown)
    slip           1 a sliding contact, 0 a static one, empty without contact (or unknown)

A window carries the labels of its static frame t (the last): the sample's `force`, `contact_mm`
and `slip` (NaN, NaN and -1 where unknown).

Bad input raises one DataError naming the file (missing or unreadable frames, rows pointing
outside the data, ranges shorter than 4 frames, frames of the wrong size or channel count); under
`on_bad_sample="skip"` each bad entry is logged and counted (`dataset.skipped` for the index,
`batch["skipped"]` through `collate_skipping` for frames that fail to load).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.errors import ConfigError, DataError

SENSORS = ("gelsight", "digit", "duragel")
SCENES = ("indoor", "outdoor")
WINDOW = 4  # frames t-3..t
STATIC_FRAME = WINDOW - 1  # the static task's frame: t, the last of the window
TACQUAD_COLUMNS = ("item", "gs_start", "gs_end", "digit_start", "digit_end", "duragel_start", "duragel_end")
INDEX_COLUMNS = ("frame_0", "frame_1", "frame_2", "frame_3", "sensor")
FRAME_LABELS = "frame_labels.csv"  # the name `sensorium synth tactile` writes (synth.FRAME_LABELS)
FRAME_LABEL_COLUMNS = ("path", "force_n", "contact_x_mm", "contact_y_mm", "slip")
NAN = float("nan")
log = logging.getLogger("sensorium.data")


@dataclass(frozen=True)
class TactileWindow:
    paths: tuple[str, ...]  # WINDOW frame files, oldest first
    sensor: int
    label: int = -1
    group: str = ""  # the object ("indoor/<item>"): splits keep one object's windows together
    source: str = ""  # index file and row, for messages
    force: float = NAN  # frame labels of the static frame t (paths[-1]); NaN / -1 = unknown
    contact_mm: tuple[float, float] = (NAN, NAN)
    slip: int = -1
    reference: str = ""  # a no-contact frame of the same recording ("": none known)


@dataclass(frozen=True)
class FrameLabel:
    force: float  # N; NaN unknown
    contact_mm: tuple[float, float]  # (x, y) mm; NaN without contact or unknown
    slip: int  # 1 sliding, 0 static, -1 without contact or unknown


# --- frame labels ---------------------------------------------------------------------------------------
def _frame_key(path: str | Path) -> str:
    return os.path.normpath(str(path))


def read_frame_labels(path: str | Path) -> dict[str, FrameLabel]:
    """frame_labels.csv (see the module docstring) -> {normalised frame path: FrameLabel}. A
    malformed row raises one DataError naming the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing frame labels file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in FRAME_LABEL_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(path, f"header lacks {', '.join(missing)} (expected {','.join(FRAME_LABEL_COLUMNS)})")
        rows = list(reader)

    def number(text: str) -> float:
        text = (text or "").strip()
        return float(text) if text else NAN

    labels = {}
    for n, row in enumerate(rows, start=2):
        try:
            force, x, y = number(row["force_n"]), number(row["contact_x_mm"]), number(row["contact_y_mm"])
        except ValueError:
            raise DataError(path, f"row {n}: force_n / contact_x_mm / contact_y_mm must be numbers or empty") from None
        slip_text = (row["slip"] or "").strip()
        if slip_text not in ("", "0", "1"):
            raise DataError(path, f"row {n}: slip must be 0, 1 or empty, got {slip_text!r}")
        if force < 0:
            raise DataError(path, f"row {n}: force_n {force} is negative")
        if math.isnan(x) != math.isnan(y):
            raise DataError(path, f"row {n}: give both contact_x_mm and contact_y_mm, or neither")
        frame = Path(row["path"])
        labels[_frame_key(frame if frame.is_absolute() else path.parent / frame)] = FrameLabel(
            force, (x, y), int(slip_text) if slip_text else -1)
    return labels


def attach_frame_labels(windows: Sequence[TactileWindow], labels: dict[str, FrameLabel]) -> list[TactileWindow]:
    """Each window with the frame labels of its static frame t (`paths[STATIC_FRAME]`, the last);
    windows whose frame t is not listed stay unknown."""
    out = []
    for window in windows:
        label = labels.get(_frame_key(window.paths[STATIC_FRAME]))
        out.append(window if label is None else replace(window, force=label.force, contact_mm=label.contact_mm,
                                                        slip=label.slip))
    return out


# --- TacQuad ------------------------------------------------------------------------------------------
def read_labels(path: str | Path) -> dict[tuple[str, str], int]:
    """labels.csv (scene,item,label[,...]) -> {(scene, item): label}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing labels file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"scene", "item", "label"} <= set(reader.fieldnames or ()):
            raise DataError(path, f"header must name scene,item,label; found {reader.fieldnames}")
        labels = {}
        for n, row in enumerate(reader, start=2):
            try:
                labels[(row["scene"], row["item"])] = int(row["label"])
            except (TypeError, ValueError):
                raise DataError(path, f"row {n}: label {row['label']!r} is not an integer") from None
    return labels


def _is_header(row: list[str]) -> bool:
    return len(row) > 1 and row[1].strip() == TACQUAD_COLUMNS[1]


def read_tacquad(root: str | Path, scenes: Sequence[str] = SCENES, labels_csv: str | Path | None = None,
                 reach_before_contact: bool = False, on_bad_sample: OnBadSample = "error",
                 skipped: list[DataError] | None = None) -> list[TactileWindow]:
    """All 4-frame windows of a TacQuad root (see the module docstring). `labels_csv`, relative to
    root or absolute, gives labels by (scene, item); items it does not list get -1. Bad rows and
    missing frames raise, or under 'skip' are logged and appended to `skipped`."""
    root = Path(root)
    labels = read_labels(root / labels_csv) if labels_csv is not None else {}
    skipped = [] if skipped is None else skipped

    def bad(error: DataError) -> None:
        handle_bad_sample(error, on_bad_sample)
        skipped.append(error)

    windows: list[TactileWindow] = []
    for scene in scenes:
        if scene not in SCENES:
            raise ConfigError("data.scenes", f"unknown TacQuad scene {scene!r}; known: {SCENES}")
        index = root / f"contact_{scene}.csv"
        if not index.is_file():
            raise DataError(index, "missing TacQuad index (expected contact_indoor.csv / contact_outdoor.csv "
                                   "next to data_indoor/ and data_outdoor/)")
        with open(index, newline="") as f:
            rows = list(csv.reader(f))
        for n, row in enumerate(rows, start=1):
            if not row or (n == 1 and _is_header(row)):
                continue
            if len(row) != len(TACQUAD_COLUMNS):
                bad(DataError(index, f"row {n}: expected {len(TACQUAD_COLUMNS)} columns "
                                     f"({', '.join(TACQUAD_COLUMNS)}), got {len(row)}"))
                continue
            item = row[0].strip()
            try:
                bounds = [int(cell) for cell in row[1:]]
            except ValueError:
                bad(DataError(index, f"row {n}: frame bounds {row[1:]} are not all integers"))
                continue
            for sensor_id, sensor in enumerate(SENSORS):
                start, end = bounds[2 * sensor_id], bounds[2 * sensor_id + 1]
                found = _tacquad_windows(root, index, n, scene, item, sensor, start, end,
                                         reach_before_contact)
                if isinstance(found, DataError):
                    bad(found)
                    continue
                label = labels.get((scene, item), -1)
                # Frame 0 is before contact when the range starts later: the recording's reference.
                first = root / f"data_{scene}" / item / sensor / "0.png"
                reference = str(first) if start > 0 and first.is_file() else ""
                windows += [TactileWindow(paths, sensor_id, label, f"{scene}/{item}", f"{index.name} row {n}",
                                          reference=reference) for paths in found]
    return windows


def _tacquad_windows(root: Path, index: Path, n: int, scene: str, item: str, sensor: str, start: int,
                     end: int, reach_before_contact: bool) -> list[tuple[str, ...]] | DataError:
    """The windows of one sensor's contact range, or the DataError that rules them out."""
    where = f"row {n} of {index.name}"
    first_end = max(start, WINDOW - 1) if reach_before_contact else start + WINDOW - 1
    if start < 0 or end < start:
        return DataError(index, f"row {n}: {sensor} frame range [{start}, {end}] is empty or negative")
    if end < first_end:
        need = "ends before frame 3" if reach_before_contact else f"has {end - start + 1} frames"
        return DataError(index, f"row {n}: {sensor} frame range [{start}, {end}] {need}; "
                                f"a sample needs {WINDOW} frames (t-3..t)")
    folder = root / f"data_{scene}" / item / sensor
    if not folder.is_dir():
        return DataError(folder, f"{where} points outside the data: no such folder")
    present = {p.name for p in folder.iterdir()}
    for t in range(first_end - WINDOW + 1, end + 1):
        if f"{t}.png" not in present:
            return DataError(folder / f"{t}.png",
                             f"missing frame ({where}: {sensor} frames [{start}, {end}])")
    return [tuple(str(folder / f"{k}.png") for k in range(t - WINDOW + 1, t + 1))
            for t in range(first_end, end + 1)]


# --- generic index ------------------------------------------------------------------------------------
def read_index_csv(path: str | Path, on_bad_sample: OnBadSample = "error",
                   skipped: list[DataError] | None = None) -> list[TactileWindow]:
    """Windows listed in a generic index CSV (see the module docstring)."""
    path = Path(path)
    skipped = [] if skipped is None else skipped
    if not path.is_file():
        raise DataError(path, "missing index file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(path, f"header lacks {', '.join(missing)} "
                                  f"(expected {','.join(INDEX_COLUMNS)}[,label][,reference])")
        rows = list(reader)
    windows = []
    for n, row in enumerate(rows, start=2):
        error = None
        frames = [Path(row[c]) if Path(row[c]).is_absolute() else path.parent / row[c]
                  for c in INDEX_COLUMNS[:WINDOW]]
        label_text = (row.get("label") or "").strip()
        reference_text = (row.get("reference") or "").strip()
        reference = (Path(reference_text) if Path(reference_text).is_absolute() else path.parent / reference_text
                     ) if reference_text else None
        if row["sensor"] not in SENSORS:
            error = DataError(path, f"row {n}: unknown sensor {row['sensor']!r}; known: {', '.join(SENSORS)}")
        elif label_text and not label_text.lstrip("-").isdigit():
            error = DataError(path, f"row {n}: label {label_text!r} is not an integer")
        else:
            absent = next((frame for frame in [*frames, reference] if frame and not frame.is_file()), None)
            if absent is not None:
                what = "reference frame" if absent == reference else "frame"
                error = DataError(absent, f"missing {what} (row {n} of {path.name})")
        if error is not None:
            handle_bad_sample(error, on_bad_sample)
            skipped.append(error)
            continue
        windows.append(TactileWindow(tuple(str(p) for p in frames), SENSORS.index(row["sensor"]),
                                     int(label_text) if label_text else -1, str(frames[0].parent),
                                     f"{path.name} row {n}", reference=str(reference or "")))
    return windows


def split_windows(windows: Sequence[TactileWindow], val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[TactileWindow], list[TactileWindow], list[TactileWindow]]:
    """(train, val, test) by `group` (object), so overlapping windows of one recording never land on
    both sides of a split. Deterministic for a seed."""
    groups = sorted({w.group for w in windows})
    random.Random(seed).shuffle(groups)
    n_val, n_test = round(len(groups) * val_fraction), round(len(groups) * test_fraction)
    val, test = set(groups[:n_val]), set(groups[n_val:n_val + n_test])
    return ([w for w in windows if w.group not in val | test], [w for w in windows if w.group in val],
            [w for w in windows if w.group in test])


# --- dataset ------------------------------------------------------------------------------------------
class TactileSequenceDataset(Dataset):
    """Windows -> samples (see the module docstring for the item contract).

    Each frame must be an RGB (3-channel) image; the four frames of a window must share one size,
    and that size must be `frame_sizes[sensor]` (H, W) when given (synthetic data: synth.json's
    `frame_sizes`). Frames are resized to `image_size` x `image_size` (bilinear), as AnyTouch resizes
    every sensor to the encoder's square input.

    `reference=True` adds each window's reference frame (`TactileWindow.reference`) to its sample; a
    window without one is a DataError naming its index row.

    `cache=True` keeps each decoded, resized frame in memory, keyed by its path: overlapping windows
    share frames (a recording of T frames yields T-3 windows), so every file is decoded once per
    process instead of once per window and epoch. Only for data that fits in memory (64 px: 12 KiB
    a frame); with DataLoader workers each worker keeps its own cache.
    """

    def __init__(self, windows: Sequence[TactileWindow], image_size: int,
                 frame_sizes: dict[str, tuple[int, int]] | None = None, on_bad_sample: OnBadSample = "error",
                 skipped: Sequence[DataError] = (), cache: bool = False, reference: bool = False):
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError("on_bad_sample", f"must be 'error' or 'skip', got {on_bad_sample!r}")
        unknown = set(frame_sizes or ()) - set(SENSORS)
        if unknown:
            raise ConfigError("frame_sizes", f"names unknown sensors {sorted(unknown)}; known: {SENSORS}")
        self.windows = list(windows)
        self.image_size = image_size
        self.frame_sizes = {k: tuple(v) for k, v in (frame_sizes or {}).items()}
        self.on_bad_sample = on_bad_sample
        self.skipped = list(skipped)  # entries dropped while reading the index (under 'skip')
        self.cache = cache
        self.reference = reference
        self._frames: dict[str, tuple[tuple[int, int], np.ndarray]] = {}  # path -> (raw H, W), (S, S, 3) uint8
        if self.skipped:
            log.warning("skipped %d bad index entries", len(self.skipped))

    @classmethod
    def from_tacquad(cls, root: str | Path, image_size: int, scenes: Sequence[str] = SCENES,
                     labels_csv: str | None = None, reach_before_contact: bool = False,
                     frame_sizes: dict[str, tuple[int, int]] | None = None,
                     on_bad_sample: OnBadSample = "error", cache: bool = False) -> TactileSequenceDataset:
        skipped: list[DataError] = []
        windows = read_tacquad(root, scenes, labels_csv, reach_before_contact, on_bad_sample, skipped)
        return cls(windows, image_size, frame_sizes, on_bad_sample, skipped, cache)

    @classmethod
    def from_index_csv(cls, path: str | Path, image_size: int,
                       frame_sizes: dict[str, tuple[int, int]] | None = None,
                       on_bad_sample: OnBadSample = "error", cache: bool = False) -> TactileSequenceDataset:
        skipped: list[DataError] = []
        windows = read_index_csv(path, on_bad_sample, skipped)
        return cls(windows, image_size, frame_sizes, on_bad_sample, skipped, cache)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        window = self.windows[index]
        try:
            # The reference frame is read with the window's frames: same checks, same size.
            frames = self._load(window, with_reference=self.reference)
        except DataError as error:
            handle_bad_sample(error, self.on_bad_sample)
            return None
        extra = {"reference": frames[WINDOW]} if self.reference else {}
        return extra | {
            "frames": frames[:WINDOW],
            "sensor": torch.tensor(window.sensor, dtype=torch.int64),
            "label": torch.tensor(window.label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "force": torch.tensor(window.force, dtype=torch.float32),
            "contact_mm": torch.tensor(window.contact_mm, dtype=torch.float32),
            "slip": torch.tensor(window.slip, dtype=torch.int64),
        }

    def _load(self, window: TactileWindow, with_reference: bool = False) -> torch.Tensor:
        """(4, 3, S, S) in [0, 1]: the window's frames, then (`with_reference`) its reference frame."""
        paths = window.paths
        if with_reference:
            if not window.reference:
                raise DataError(window.source or window.paths[0],
                                "no reference frame (a frame of the recording without contact: TacQuad frame 0 "
                                "before a later contact range, or the index CSV's reference column); "
                                "data.reference_frames needs one for every window")
            paths = (*paths, window.reference)
        expected = self.frame_sizes.get(SENSORS[window.sensor])
        frames, first_size = [], None
        for path in paths:
            size, frame = self._frame(path, window)
            if expected is not None and size != expected:
                raise DataError(path, f"image is {size[0]}x{size[1]} (HxW); {SENSORS[window.sensor]} frames "
                                      f"are {expected[0]}x{expected[1]}")
            if first_size is not None and size != first_size:
                raise DataError(path, f"image is {size[0]}x{size[1]} (HxW) but frame {window.paths[0]} of "
                                      f"the same window is {first_size[0]}x{first_size[1]}")
            first_size = first_size or size
            frames.append(frame)
        stack = torch.from_numpy(np.stack(frames))  # (4 [+ 1], S, S, 3) uint8
        return stack.permute(0, 3, 1, 2).float().div_(255.0)  # (4 [+ 1], 3, S, S)

    def _frame(self, path: str, window: TactileWindow) -> tuple[tuple[int, int], np.ndarray]:
        """(raw (H, W), frame resized to (S, S, 3) uint8) of one file; from the cache when enabled."""
        cached = self._frames.get(path)
        if cached is not None:
            return cached
        try:
            with Image.open(path) as file:
                image = file.copy()  # decodes the whole file now, so truncation shows here
        except FileNotFoundError:
            raise DataError(path, f"missing frame ({window.source})") from None
        except (OSError, SyntaxError, ValueError) as e:  # PIL: unidentified or truncated files
            raise DataError(path, f"unreadable image ({e})") from None
        if image.mode != "RGB":
            raise DataError(path, f"image has {len(image.getbands())} channel(s) (mode {image.mode}); "
                                  "tactile frames must be RGB")
        size = (image.height, image.width)
        if size != (self.image_size,) * 2:
            image = image.resize((self.image_size,) * 2, Image.BILINEAR)
        entry = (size, np.asarray(image))
        if self.cache:
            self._frames[path] = entry
        return entry
