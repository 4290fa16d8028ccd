"""Feature packs: the per-frame patch features of one image encoder over one episode, as a zarr v3
group that a DataLoader worker reads one window at a time (never the whole file).

    <pack>.zarr/
      features   [F, Hf, Wf, C] float16 (or float32), one chunk per frame, uncompressed by default
      windows    [W, T] int32: each window's frames as indices into `features`; windows are runs of
                 T consecutive frames, so overlapping windows share their frames on disk and a
                 window is one contiguous read of T chunks
      attrs      format, encoder, frame_paths (F paths, relative to the frames root), transform (a
                 `GridTransform`: image size, resize, crop, stride: where any uv lands on the grid),
                 window, window_stride, extra (the encoder's own settings), complete

Writer API (for any extractor, including external ones such as VGGT or CroCo):

    with PackWriter(path, frame_paths, transform, channels=C, encoder="dinov2") as pack:
        for start, feats in batches:           # feats (n, Hf, Wf, C), frames in order
            pack.write(start, feats)
    # the pack appears at `path` only when every frame was written (temp dir + rename)

or `write_pack(path, features, frame_paths, transform, encoder=...)` for an array in memory.
Reader: `open_pack(path)` checks the layout and returns a `FeaturePack` whose arrays open on first
access (in whichever process reads them) and whose `window(i)` / `frames(start, stop)` read only that
slice.

Why packs are read around zarr-python when they can be: a training sample reads one small frame of each
encoder (10-40 KB), and zarr-python 3 spends ~0.5 ms of Python and event-loop work on each such read,
against ~30 us for the file itself: 40% of the time to load a demo sample (2.6 ms), which a loader
with no workers adds to every step. An uncompressed pack (the writer's default) stores each frame as
one file of raw little-endian bytes under the zarr v3 spec's default chunk keys
(`features/c/<frame>/0/0/0`), so `frames()` reads those files straight into the output array. Anything
else (compressed packs, other codecs or chunk keys, a store that is not a local directory) is read
through zarr; a missing chunk file is the fill value, as in zarr (the writer skips frames equal to it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.data.image_grid import GridTransform
from sensorium.errors import ConfigError, DataError

PACK_FORMAT = "sensorium.feature_pack/1"
FEATURE_DTYPES = ("float16", "float32")


def window_index(num_frames: int, window: int, stride: int) -> np.ndarray:
    """[W, T] int32 frame indices of the windows 0..T-1, s..s+T-1, ... that fit in `num_frames`."""
    if window < 1 or stride < 1:
        raise ConfigError("window", f"window ({window}) and stride ({stride}) must be positive")
    if num_frames < window:
        return np.zeros((0, window), dtype=np.int32)
    starts = np.arange(0, num_frames - window + 1, stride)
    return (starts[:, None] + np.arange(window)[None, :]).astype(np.int32)


def _compressors(compression: str):
    if compression == "none":
        return None
    if compression == "lz4":
        from zarr.codecs import BloscCodec

        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    raise ConfigError("compression", f"must be 'none' or 'lz4', got {compression!r}")


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory `tmp` to `path` by rename (atomic on one filesystem); an older
    `path` is moved aside first and removed after, so a reader never sees half of either."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class PackWriter:
    """Writes one pack frame batch by frame batch into a temporary directory beside `path`; `close()`
    (or leaving the `with` block without an exception) checks every frame was written and renames it
    into place. An exception leaves nothing at `path` (the temporary directory is removed)."""

    def __init__(self, path: str | os.PathLike, frame_paths: Sequence[str], transform: GridTransform, channels: int,
                 encoder: str, window: int = 8, window_stride: int = 4, dtype: str = "float16",
                 compression: str = "none", extra: dict[str, Any] | None = None):
        import zarr

        if dtype not in FEATURE_DTYPES:
            raise ConfigError("dtype", f"pack features must be one of {FEATURE_DTYPES}, got {dtype!r}")
        self.path = Path(path)
        self.frame_paths = [str(p) for p in frame_paths]
        self.transform = transform
        self.dtype = np.dtype(dtype)
        F, (Hf, Wf) = len(self.frame_paths), transform.grid
        if F == 0:
            raise DataError(self.path, "a pack needs at least one frame")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self._group = zarr.open_group(str(self.tmp), mode="w")
        self._features = self._group.create_array("features", shape=(F, Hf, Wf, channels),
                                                  chunks=(1, Hf, Wf, channels), dtype=self.dtype,
                                                  compressors=_compressors(compression))
        windows = window_index(F, window, window_stride)
        self._group.create_array("windows", shape=windows.shape, chunks=(max(1, len(windows)), window),
                                 dtype="int32", compressors=None)[...] = windows
        self._group.attrs.update({
            "format": PACK_FORMAT, "encoder": encoder, "frame_paths": self.frame_paths,
            "transform": transform.to_dict(), "window": window, "window_stride": window_stride,
            "extra": extra or {}, "complete": False,
        })
        self._written = np.zeros(F, dtype=bool)
        self._closed = False

    def write(self, start: int, features: np.ndarray) -> None:
        """Frames start .. start + n - 1: features (n, Hf, Wf, C), any float dtype (cast to the pack's)."""
        features = np.asarray(features)
        expected = self._features.shape[1:]
        if features.ndim != 4 or features.shape[1:] != expected:
            raise ValueError(f"{self.path}: features of shape {features.shape[1:]} per frame, the pack holds {expected}")
        if not np.isfinite(features).all():
            raise DataError(self.path, f"non-finite features for frames {start}..{start + len(features) - 1}")
        stop = start + len(features)
        if start < 0 or stop > len(self._written):
            raise ValueError(f"{self.path}: frames {start}..{stop - 1} outside 0..{len(self._written) - 1}")
        self._features[start:stop] = features.astype(self.dtype, copy=False)
        self._written[start:stop] = True

    def close(self) -> Path:
        if self._closed:
            return self.path
        missing = np.flatnonzero(~self._written)
        if len(missing):
            self.abort()
            raise DataError(self.path, f"{len(missing)} frame(s) never written (first: {missing[:5].tolist()})")
        self._group.attrs["complete"] = True
        replace_dir(self.tmp, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_pack(path: str | os.PathLike, features: np.ndarray, frame_paths: Sequence[str], transform: GridTransform,
               encoder: str, window: int = 8, window_stride: int = 4, dtype: str = "float16",
               compression: str = "none", extra: dict[str, Any] | None = None) -> Path:
    """One pack from features (F, Hf, Wf, C) in memory, written atomically."""
    features = np.asarray(features)
    with PackWriter(path, frame_paths, transform, features.shape[-1], encoder, window, window_stride, dtype,
                    compression, extra) as pack:
        pack.write(0, features)
    return Path(path)


class FeaturePack:
    """A pack's metadata (read at open) and lazy access to its arrays: the zarr arrays open on first
    use in the process that reads them (a DataLoader worker), and are not pickled with the object."""

    def __init__(self, path: Path, attrs: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype,
                 windows: np.ndarray, raw_chunks: bool = False, fill_value: float = 0.0):
        """raw_chunks: the features array is uncompressed with one frame per chunk under the default chunk
        keys, so frames are read from their chunk files directly (see the module docstring)."""
        self.path = path
        self.raw_chunks, self.fill_value = raw_chunks, fill_value
        self.encoder: str = attrs["encoder"]
        self.frame_paths: list[str] = list(attrs["frame_paths"])
        self.transform = GridTransform.from_dict(attrs["transform"])
        self.window_size: int = int(attrs["window"])
        self.window_stride: int = int(attrs["window_stride"])
        self.extra: dict[str, Any] = dict(attrs.get("extra") or {})
        self.shape = shape
        self.dtype = dtype
        self.windows = windows
        self._features = None

    @property
    def num_frames(self) -> int:
        return self.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    @property
    def channels(self) -> int:
        return self.shape[3]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_features"] = None  # each process opens its own handle
        return state

    @property
    def features(self):
        if self._features is None:
            import zarr

            self._features = zarr.open_array(str(self.path / "features"), mode="r")
        return self._features

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames start .. stop - 1 -> (n, Hf, Wf, C) in the pack's dtype: one contiguous read."""
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"{self.path}: frames {start}..{stop - 1} outside 0..{self.num_frames - 1}")
        if self.raw_chunks:
            return self._read_chunk_files(start, stop)
        return np.asarray(self.features[start:stop])

    def _read_chunk_files(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype.newbyteorder("<"))
        frame_bytes = out[0].nbytes
        for i, frame in enumerate(range(start, stop)):
            chunk = f"{self.path}/features/c/{frame}/0/0/0"
            try:
                with open(chunk, "rb", buffering=0) as f:
                    read = f.readinto(memoryview(out[i]).cast("B"))
            except FileNotFoundError:  # zarr writes no chunk that equals the fill value
                out[i] = self.fill_value
                continue
            except OSError as e:
                raise DataError(chunk, f"cannot read frame {frame} ({e})") from None
            if read != frame_bytes:
                raise DataError(chunk, f"frame {frame} holds {read} bytes, {frame_bytes} expected (a truncated pack)")
        return out

    def window(self, i: int) -> np.ndarray:
        """Window i -> (T, Hf, Wf, C)."""
        frames = self.windows[i]
        return self.frames(int(frames[0]), int(frames[-1]) + 1)


def open_pack(path: str | os.PathLike) -> FeaturePack:
    """Open a pack's metadata and check its layout; one DataError naming the pack for anything wrong."""
    import zarr

    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "no such feature pack")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        features, windows = group["features"], group["windows"]
        shape, dtype = tuple(features.shape), np.dtype(features.dtype)
        windows_array = np.asarray(windows[...])
        raw_chunks = _stores_raw_frames(features)
    except (KeyError, ValueError, OSError, TypeError) as e:
        raise DataError(path, f"not a readable feature pack ({type(e).__name__}: {e})") from None
    if attrs.get("format") != PACK_FORMAT:
        raise DataError(path, f"format {attrs.get('format')!r}, expected {PACK_FORMAT!r}")
    if not attrs.get("complete", False):
        raise DataError(path, "incomplete pack (its writer did not finish)")
    missing = [k for k in ("encoder", "frame_paths", "transform", "window", "window_stride") if k not in attrs]
    if missing:
        raise DataError(path, f"pack attributes lack {missing}")
    if len(shape) != 4:
        raise DataError(path, f"features must be [F, Hf, Wf, C], got shape {list(shape)}")
    if dtype.name not in FEATURE_DTYPES:
        raise DataError(path, f"features are {dtype.name}, expected one of {FEATURE_DTYPES}")
    try:
        transform = GridTransform.from_dict(attrs["transform"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"bad transform in meta: {e}") from None
    if tuple(shape[1:3]) != transform.grid:
        raise DataError(path, f"features hold a {shape[1]}x{shape[2]} grid but the transform gives {transform.grid}")
    if len(attrs["frame_paths"]) != shape[0]:
        raise DataError(path, f"{len(attrs['frame_paths'])} frame paths for {shape[0]} frames of features")
    if windows_array.ndim != 2 or (windows_array.size and (windows_array.min() < 0 or windows_array.max() >= shape[0])):
        raise DataError(path, f"windows index of shape {list(windows_array.shape)} points outside the {shape[0]} frames")
    if windows_array.size and not (np.diff(windows_array, axis=1) == 1).all():
        raise DataError(path, "windows must be runs of consecutive frames")
    return FeaturePack(path, attrs, shape, dtype, windows_array, raw_chunks=raw_chunks,
                       fill_value=float(features.metadata.fill_value) if raw_chunks else 0.0)


def _stores_raw_frames(features) -> bool:
    """True when `features` (a zarr array) keeps each frame as one chunk file of raw little-endian bytes at
    the default chunk key c/<frame>/0/0/0 of a local directory: then `FeaturePack.frames` reads the files."""
    from zarr.storage import LocalStore

    meta = json.loads(json.dumps(features.metadata.to_dict(), default=str))  # tuples -> lists
    return (isinstance(features.store, LocalStore) and features.path == "features"
            and meta.get("zarr_format") == 3
            and meta.get("codecs") == [{"name": "bytes", "configuration": {"endian": "little"}}]
            and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}}
            and meta.get("chunk_grid") == {"name": "regular",
                                           "configuration": {"chunk_shape": [1, *features.shape[1:]]}}
            and not meta.get("storage_transformers"))
