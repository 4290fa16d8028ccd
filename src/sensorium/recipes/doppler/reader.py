"""The doppler note's on-disk layout: one folder per user, spectrogram images inside.

    DIR/ID_1/*.png  DIR/ID_2/*.png  ...  DIR/ID_31/*.png        (any number of users)

Folder `ID_k` holds user k's recordings (k a positive integer; other folders and loose files at
the top level, such as users.csv, are not user data). Images may be png, jpg, bmp or tiff, of any
size and mode (L, RGB, RGBA, P, I;16, ...), but one dataset must be consistent: every image shares
one size and one mode. They are converted to the model's channels (1: grayscale, 3: RGB) and
resolution when read.

A **recording** is the unit that a split keeps together: by default each file is its own recording;
files whose stems differ only by a trailing `_seg3`, `_part3`, `_win3` or `-w3` (slices of one
walk) form one recording (`RECORDING_PATTERN`).

`split.csv` (written by `sensorium prepare doppler`): `path,user,recording,split` with `path`
relative to the dataset folder, `user` the k of `ID_k`, `split` train, val or test (`SPLITS`). Val
chooses (the VAE's best checkpoint, the CFG scale), test reports (`sensorium eval doppler`).

Bad input raises one DataError naming the file: a file in a user folder that is not an image (by
suffix) or that cannot be decoded, an empty user folder, a folder without any user, images of
different sizes or modes. Under `on_bad_sample="skip"` bad files and empty folders are logged,
counted and left out instead. Hidden files (`.DS_Store`, ...) are ignored.

What the later stages read, and the datasets on them:
- a prepared folder (`sensorium prepare doppler`): split.csv + prepare.json -> `RealSpectrograms`,
  every listed image decoded once at the model's size and channels, as uint8 pixels;
- a latents folder (`sensorium extract doppler`): latents.safetensors + latents.json -> `read_latents`;
- `DictDataset`: rows of equally long tensors as dicts (both DataModules' datasets).

Pixel scales: images are read as uint8 pixels; the classifier and the frozen encoder take them in
[0, 1], the VAE in [-1, 1] (LDM's convention). `to_unit` / `to_pixels` and `to_signed` /
`from_signed` are the only conversions between them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
USER_FOLDER = re.compile(r"^ID_(\d+)$")
RECORDING_PATTERN = r"^(?P<recording>.+?)(?:[_-](?:seg|part|win|w)\d+)?$"
SPLIT_COLUMNS = ("path", "user", "recording", "split")
SPLITS = ("train", "val", "test")
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


# --- pixel scales -------------------------------------------------------------------------------------
def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return pixels.float() / 255.0


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 pixels (rounded)."""
    return (images * 255).round().to(torch.uint8)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1]."""
    return images * 2 - 1


def from_signed(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1]."""
    return (images + 1) / 2


# --- the ID_k layout ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recording:
    path: Path
    """The image file."""
    user: int
    """k of its ID_k folder."""
    recording: str
    """Recording id within the user (files of one recording stay in one split)."""


def user_folders(root: str | Path) -> dict[int, Path]:
    """{k: root/ID_k} for every user folder of root, by user id."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "no such dataset folder")
    folders = {}
    for entry in root.iterdir():
        match = USER_FOLDER.match(entry.name)
        if entry.is_dir() and match:
            folders[int(match.group(1))] = entry
    if not folders:
        raise DataError(root, "no user folders: expected ID_1, ID_2, ... (one folder of spectrogram "
                              "images per user)")
    return dict(sorted(folders.items()))


def scan(root: str | Path, on_bad_sample: OnBadSample = "error", skipped: list[DataError] | None = None,
         recording_pattern: str = RECORDING_PATTERN) -> list[Recording]:
    """Every image of every user folder, sorted by user and file name (see the module docstring)."""
    pattern = re.compile(recording_pattern)
    if "recording" not in pattern.groupindex:
        raise ConfigError("recording_pattern", f"{recording_pattern!r} has no (?P<recording>...) group")
    skipped = [] if skipped is None else skipped
    found: list[Recording] = []
    for user, folder in user_folders(root).items():
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        images = []
        for path in files:
            if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                error = DataError(path, f"not an image file in user folder {folder.name} (expected one of "
                                        f"{', '.join(IMAGE_SUFFIXES)})")
                handle_bad_sample(error, on_bad_sample)
                skipped.append(error)
                continue
            images.append(path)
        if not images:
            error = DataError(folder, "empty user folder: no images")
            handle_bad_sample(error, on_bad_sample)
            skipped.append(error)
            continue
        for path in images:
            match = pattern.match(path.stem)
            found.append(Recording(path, user, match.group("recording") if match else path.stem))
    if not found:
        raise DataError(root, f"no images in any user folder ({len(skipped)} skipped)")
    return found


def probe(path: str | Path) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) of an image, decoding it fully (a truncated file fails here)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, (image.height, image.width)
    except _IMAGE_ERRORS as e:
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None


def check_consistent(recordings: Sequence[Recording], on_bad_sample: OnBadSample = "error",
                     skipped: list[DataError] | None = None) -> tuple[list[Recording], str, tuple[int, int]]:
    """The recordings whose images decode and share the first image's mode and size, that mode and
    size. A differing or undecodable image raises (or, under skip, is logged and left out)."""
    skipped = [] if skipped is None else skipped
    kept: list[Recording] = []
    reference: tuple[str, tuple[int, int], Path] | None = None
    for rec in recordings:
        try:
            mode, size = probe(rec.path)
            if reference is not None and (mode, size) != reference[:2]:
                first_mode, (h, w), first = reference
                raise DataError(rec.path, f"image is {mode} {size[0]}x{size[1]} (HxW), but {first} is "
                                          f"{first_mode} {h}x{w}: all images of a dataset must share one "
                                          "size and mode")
        except DataError as error:
            handle_bad_sample(error, on_bad_sample)
            skipped.append(error)
            continue
        reference = reference or (mode, size, rec.path)
        kept.append(rec)
    if reference is None:
        raise DataError(Path(recordings[0].path).parent.parent if recordings else "dataset",
                        "no decodable images")
    return kept, reference[0], reference[1]


def to_channels(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image of any mode -> (H, W, channels) uint8. 16-bit and float grayscale are scaled by
    their own range (spectrogram exports use the full range)."""
    if channels not in (1, 3):
        raise ConfigError("data.channels", f"must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
        gray = np.round(scaled).astype(np.uint8)
        image = Image.fromarray(gray, mode="L")
    pixels = np.array(image.convert("L" if channels == 1 else "RGB"))  # a writable copy for torch
    return pixels[..., None] if channels == 1 else pixels


def load_image(path: str | Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    """(channels, H, W) uint8 tensor of an image resized (bilinear, antialiased) to `size`."""
    try:
        with Image.open(path) as image:
            pixels = to_channels(image, channels)
    except _IMAGE_ERRORS as e:
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)  # (C, H0, W0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x


def load_images(paths: Sequence[str | Path], size: tuple[int, int], channels: int) -> torch.Tensor:
    """(N, channels, H, W) uint8 stack of `load_image` for every path."""
    if not paths:
        return torch.zeros(0, channels, *size, dtype=torch.uint8)
    return torch.stack([load_image(p, size, channels) for p in paths])


# --- split.csv ----------------------------------------------------------------------------------------
def split_csv_text(root: Path, recordings: Sequence[Recording], splits: Sequence[str]) -> str:
    """split.csv's text for (recording, split) pairs, paths relative to root."""
    lines = [",".join(SPLIT_COLUMNS)]
    for rec, split in zip(recordings, splits):
        lines.append(",".join([Path(rec.path).relative_to(root).as_posix(), str(rec.user), rec.recording,
                               split]))
    return "\n".join(lines) + "\n"


def read_split_csv(path: str | Path) -> list[tuple[str, int, str, str]]:
    """split.csv -> [(relative path, user, recording, split)]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing split file (run `sensorium prepare doppler --input DIR "
                              "--out THIS_DIR`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != SPLIT_COLUMNS:
            raise DataError(path, f"header must be {','.join(SPLIT_COLUMNS)}, found {reader.fieldnames}")
        rows = []
        for n, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS or not row["user"].isdigit():
                raise DataError(path, f"row {n}: split must be train, val or test and user an integer, got "
                                      f"{row['split']!r}, {row['user']!r}")
            rows.append((row["path"], int(row["user"]), row["recording"], row["split"]))
    return rows


# --- the prepared folder and its dataset ---------------------------------------------------------------
def read_prepared(root: str | Path) -> dict:
    """prepare.json of a prepared folder (with its split.csv)."""
    path = Path(root) / "prepare.json"
    if not path.is_file():
        raise DataError(path, "missing: data.root must be the output of `sensorium prepare doppler "
                              "--input DIR --out THIS_DIR`")
    return json.loads(path.read_text())


class DictDataset(Dataset):
    """Rows of equally long tensors as dicts."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class RealSpectrograms:
    """A prepared dataset's images, decoded: `pixels[split]` uint8 (N, C, H, W), `labels[split]`
    (N,) user indices into `users`, `paths[split]`. Used by the DataModule and by the evaluation."""

    def __init__(self, root: str | Path, image_size: int = 64, channels: int = 1):
        self.root = Path(root)
        self.info = read_prepared(root)
        self.input = Path(self.info["input"])
        self.users: list[int] = list(self.info["users"])
        self.image_size, self.channels = image_size, channels
        index = {u: i for i, u in enumerate(self.users)}
        rows = read_split_csv(self.root / "split.csv")
        self.paths: dict[str, list[Path]] = {split: [] for split in SPLITS}
        labels: dict[str, list[int]] = {split: [] for split in SPLITS}
        for path, user, _, split in rows:
            if user not in index:
                raise DataError(self.root / "split.csv",
                                f"user {user} is not in prepare.json's users {self.users}")
            self.paths[split].append(self.input / path)
            labels[split].append(index[user])
        missing = next((p for paths in self.paths.values() for p in paths if not p.is_file()), None)
        if missing is not None:
            raise DataError(missing,
                            f"listed in {self.root / 'split.csv'} but missing (moved dataset? prepare again)")
        size = (image_size, image_size)
        self.pixels = {split: load_images(paths, size, channels) for split, paths in self.paths.items()}
        self.labels = {split: torch.tensor(v, dtype=torch.long) for split, v in labels.items()}

    def require(self, split: str) -> None:
        """Fail naming split.csv when `split` holds no image (a folder prepared before test splits:
        prepare it again)."""
        if not len(self.labels[split]):
            option = "--test-ratio" if split == "test" else "--val-ratio"
            raise DataError(self.root / "split.csv", f"no {split} images (prepare again with {option} > 0)")

    def dataset(self, split: str) -> DictDataset:
        user_ids = torch.tensor(self.users, dtype=torch.long)
        labels = self.labels[split]
        return DictDataset({"pixels": self.pixels[split], "label": labels, "user": user_ids[labels],
                            "index": torch.arange(len(labels))})


# --- the latents folder --------------------------------------------------------------------------------
def read_latents(root: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(latents.json, tensors of latents.safetensors) of an extracted folder."""
    from safetensors.torch import load_file

    root = Path(root)
    meta_path, tensor_path = root / "latents.json", root / "latents.safetensors"
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise DataError(path, "missing: data.root must be the output of `sensorium extract doppler`")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path))
    # Test latents are optional: no fit reads them, and folders extracted before test splits lack them.
    needed = {f"{split}_{key}" for split in ("train", "val") for key in ("mean", "std", "label")} | {
        "channel_mean", "channel_std"}
    if not needed <= set(tensors):
        raise DataError(tensor_path, f"lacks {sorted(needed - set(tensors))}")
    shape = tuple(meta["latent_shape"])
    if tuple(tensors["train_mean"].shape[1:]) != shape:
        raise DataError(tensor_path,
                        f"latents are {tuple(tensors['train_mean'].shape[1:])}, latents.json says {shape}")
    return meta, tensors
