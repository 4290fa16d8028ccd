"""Frozen-feature caches: the outputs of an encoder whose weights never change during a run, computed
once per sample and stored, so that a DataLoader worker reads a sample's tokens instead of decoding
its inputs and running the encoder on them every epoch.

    DIR/<name>-<key>.zarr/     one zarr v3 group per (encoder weights, input settings, dataset)
      tokens    [N, *token_shape] float16 (or float32): one chunk per sample, uncompressed, so a
                worker reads one sample's tokens (one file) and nothing else
      attrs     format, name, fingerprint, key, encoder (the weights' digest), inputs (the settings
                as given), source, keys (the N sample keys in row order), bad ({key: problem} for
                samples that could not be read under on_bad_sample=skip), complete

What a store's identity covers, so that a store is used only for what it was computed from:

- `key` (in the name): the encoder's digest (`module_digest`: its classes, its `transformers`
  config, and the bytes of every parameter and buffer as the run holds them, so a checkpoint
  restored over a backbone counts, not the directory it was first loaded from), the input
  settings (the recipe's preprocessing, the precision the encoder runs in, the stored dtype) and
  the dataset (`source`). Another checkpoint, preprocessing or dataset gets a store of its own
  beside this one: each is computed once and kept.
- `fingerprint` (in the attrs): the key plus every sample's key and files (absolute path, size,
  modification time: `file_stamp`). When a file changes, appears or goes, the store under that key
  no longer matches and is rebuilt in place. A store whose fingerprint does not match is never
  read.

Writes are atomic: a store is built in a temporary directory beside its place (`.<store>.tmp-XXXX`),
checked (every row written, or recorded as a bad sample), marked complete and renamed into place.
A crash leaves only that temporary directory, which nothing reads (delete it at leisure).

`ensure_feature_stores` builds what is missing or stale and opens the stores. Under several ranks
(`strategy`: anything with `global_rank`, `world_size`, `broadcast` and `barrier`, such as a
Lightning strategy) rank 0 decides and creates the temporary store, every rank encodes its own
contiguous share of the samples into it, and rank 0 checks and renames it: the directory must be on
a filesystem every rank sees (one that is not is reported, naming the rows that never arrived).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.packs import replace_dir
from sensorium.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FEATURE_CACHE_FORMAT = "sensorium.feature_cache/1"
FEATURE_DTYPES = ("float16", "float32")
_TOKENS = "tokens"


# --- identities -------------------------------------------------------------------------------------
def digest(value: Any) -> str:
    """Hex digest of a JSON-able value (keys sorted, so dict order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def module_digest(module: nn.Module) -> str:
    """What a module computes, as far as its own state can tell: the class of every submodule (a
    wrapper's input convention lives in its class), each `transformers` config found on them (less
    the library version and the directory it was loaded from), and the name, dtype, shape and bytes
    of every parameter and buffer. Two modules with the same digest compute the same function with
    the same code; a fine-tuned or re-initialised weight anywhere changes it. Hashes about 1 GB/s."""
    hasher = hashlib.blake2b(digest_size=16)
    for name, sub in module.named_modules():
        hasher.update(f"{name}:{type(sub).__qualname__};".encode())
        config = getattr(sub, "config", None)
        if hasattr(config, "to_json_string"):
            settings = json.loads(config.to_json_string(use_diff=False))
            for volatile in ("transformers_version", "_name_or_path"):
                settings.pop(volatile, None)
            hasher.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for kind, named in (("p", module.named_parameters()), ("b", module.named_buffers())):
        for name, tensor in named:
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            hasher.update(f"{kind}:{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
            if data.numel():
                hasher.update(data.view(torch.uint8).numpy())
    return hasher.hexdigest()


def file_stamp(path: str | os.PathLike | None) -> list | None:
    """[absolute path, size, modification time in ns] of a file; None for None (a missing modality)."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as e:
        raise DataError(path, f"cannot stat ({e})") from None
    return [str(path), stat.st_size, stat.st_mtime_ns]


# --- requests ---------------------------------------------------------------------------------------
@dataclass
class FeatureRequest:
    """One encoder whose outputs a recipe wants stored: one store, named `name`.

    encoder: the module (for its digest and its device); encode: inputs (n, ...) -> tokens
    (n, *token_shape) on the encoder's device (default: the encoder itself); inputs: JSON-able
    settings that decide what the encoder is given (preprocessing, precision, a version of the
    recipe's reader); files: per sample, in `keys` order, whatever identifies its input files
    (`file_stamp`s); example: one input (1, ...) with the shape real inputs have, run once to
    learn the token shape."""

    name: str
    encoder: nn.Module
    inputs: dict[str, Any]
    files: Sequence[Any]
    example: torch.Tensor
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encode or self.encoder)(x)


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


# --- reading ----------------------------------------------------------------------------------------
class FeatureStore:
    """A complete store, opened: `read(row)` -> one sample's tokens (numpy, the store's dtype).

    Picklable and light (a DataLoader worker gets a copy): the zarr handle opens on first use in the
    process that reads, and an uncompressed store's rows are read straight from their chunk files
    (as `sensorium.data.packs` does), without zarr's per-read overhead."""

    def __init__(self, path: Path, attrs: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype, raw_chunks: bool):
        self.path = path
        self.name: str = attrs["name"]
        self.fingerprint: str = attrs["fingerprint"]
        self.keys: list[str] = list(attrs["keys"])
        self.bad: dict[str, str] = dict(attrs.get("bad") or {})
        self.shape = shape  # (N, *token_shape)
        self.dtype = dtype
        self.raw_chunks = raw_chunks
        self._rows = {key: i for i, key in enumerate(self.keys)}
        self._array = None

    @property
    def token_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # each process opens its own handle
        return state

    def row(self, key: str) -> int:
        try:
            return self._rows[key]
        except KeyError:
            raise DataError(self.path, f"holds no sample {key!r}") from None

    def problem(self, row: int) -> str | None:
        """Why row `row` holds no tokens (its sample could not be read when the store was built), or None."""
        return self.bad.get(self.keys[row])

    def read(self, row: int) -> np.ndarray:
        if not 0 <= row < len(self):
            raise IndexError(f"{self.path}: row {row} outside 0..{len(self) - 1}")
        problem = self.problem(row)
        if problem is not None:
            raise DataError(self.path, f"sample {self.keys[row]!r} was bad when the cache was built: {problem}")
        if self.raw_chunks:
            return self._read_chunk_file(row)
        if self._array is None:
            import zarr

            self._array = zarr.open_array(str(self.path / _TOKENS), mode="r")
        return np.asarray(self._array[row])

    def _read_chunk_file(self, row: int) -> np.ndarray:
        out = np.empty(self.token_shape, dtype=self.dtype.newbyteorder("<"))
        chunk = self.path / _TOKENS / "c" / str(row) / Path(*["0"] * len(self.token_shape))
        try:
            with open(chunk, "rb", buffering=0) as f:
                read = f.readinto(memoryview(out).cast("B"))
        except OSError as e:
            raise DataError(chunk, f"cannot read the tokens of sample {self.keys[row]!r} ({e}); delete {self.path} "
                                   "to rebuild it") from None
        if read != out.nbytes:
            raise DataError(chunk, f"holds {read} bytes, {out.nbytes} expected (a truncated cache; delete "
                                   f"{self.path} to rebuild it)")
        return out


def _raw_chunks(array, token_shape: tuple[int, ...]) -> bool:
    """True when `array` keeps each row as one chunk file of raw little-endian bytes at the default
    chunk key c/<row>/0/.../0 of a local directory (what `StoreWriter` writes)."""
    from zarr.storage import LocalStore

    meta = json.loads(json.dumps(array.metadata.to_dict(), default=str))
    return (isinstance(array.store, LocalStore) and meta.get("zarr_format") == 3
            and meta.get("codecs") == [{"name": "bytes", "configuration": {"endian": "little"}}]
            and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}}
            and meta.get("chunk_grid") == {"name": "regular", "configuration": {"chunk_shape": [1, *token_shape]}}
            and not meta.get("storage_transformers"))


def _read_attrs(path: Path) -> dict[str, Any] | None:
    """A store's attributes, or None where there is no readable store."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes")
    return attrs if isinstance(attrs, dict) else None


def open_store(path: str | os.PathLike, fingerprint: str | None = None) -> FeatureStore:
    """Open a complete store (and check it is the one `fingerprint` names); one DataError naming the
    store for anything wrong."""
    import zarr

    path = Path(path)
    attrs = _read_attrs(path)
    if attrs is None:
        raise DataError(path, "no feature cache here")
    if attrs.get("format") != FEATURE_CACHE_FORMAT:
        raise DataError(path, f"format {attrs.get('format')!r}, expected {FEATURE_CACHE_FORMAT!r}")
    if not attrs.get("complete", False):
        raise DataError(path, "incomplete feature cache (its build did not finish)")
    if fingerprint is not None and attrs.get("fingerprint") != fingerprint:
        raise DataError(path, "was computed from other weights, settings or files than this run's")
    try:
        array = zarr.open_array(str(path / _TOKENS), mode="r")
        shape, dtype = tuple(array.shape), np.dtype(array.dtype)
    except (KeyError, ValueError, OSError, TypeError) as e:
        raise DataError(path, f"not a readable feature cache ({type(e).__name__}: {e})") from None
    if dtype.name not in FEATURE_DTYPES or len(shape) < 2:
        raise DataError(path, f"tokens of dtype {dtype.name} and shape {list(shape)}: not a feature cache")
    if len(attrs.get("keys", ())) != shape[0]:
        raise DataError(path, f"{len(attrs.get('keys', ()))} sample keys for {shape[0]} rows of tokens")
    return FeatureStore(path, attrs, shape, dtype, _raw_chunks(array, shape[1:]))


# --- writing ----------------------------------------------------------------------------------------
class StoreWriter:
    """The temporary directory of one store under construction. `create` makes it (rank 0),
    `attach` opens it for writing rows (any rank, once it exists), `finish` checks every row and
    renames it into place, `abort` removes it."""

    def __init__(self, tmp: Path, path: Path):
        import zarr

        self.tmp, self.path = tmp, path
        self._array = zarr.open_array(str(tmp / _TOKENS), mode="r+")
        self.dtype = np.dtype(self._array.dtype)
        self.token_shape = tuple(self._array.shape[1:])

    @classmethod
    def create(cls, path: Path, token_shape: Sequence[int], dtype: str, attrs: dict[str, Any]) -> StoreWriter:
        import zarr

        if dtype not in FEATURE_DTYPES:
            raise ConfigError("feature_dtype", f"must be one of {FEATURE_DTYPES}, got {dtype!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        group = zarr.open_group(str(tmp), mode="w")
        # NaN fill: a written row never equals it (rows are checked finite), so every written row is a
        # chunk file and a missing file means a row nobody wrote.
        group.create_array(_TOKENS, shape=(len(attrs["keys"]), *token_shape), chunks=(1, *token_shape),
                           dtype=dtype, compressors=None, fill_value=float("nan"))
        group.attrs.update({**attrs, "complete": False})
        return cls(tmp, path)

    @classmethod
    def attach(cls, tmp: str | os.PathLike, path: str | os.PathLike) -> StoreWriter:
        tmp = Path(tmp)
        if not (tmp / _TOKENS).is_dir():
            raise DataError(tmp, "the feature cache under construction is not visible from this process: the cache "
                                 "directory must be on a filesystem every rank shares")
        return cls(tmp, Path(path))

    def write(self, start: int, tokens: np.ndarray) -> None:
        """Rows start .. start + n - 1: tokens (n, *token_shape), any float dtype (cast to the store's)."""
        if tuple(tokens.shape[1:]) != self.token_shape:
            raise DataError(self.path, f"tokens of shape {list(tokens.shape[1:])} per sample; the cache holds "
                                       f"{list(self.token_shape)}")
        with np.errstate(over="ignore"):  # an overflow is reported below, as a DataError
            values = tokens.astype(self.dtype, copy=False)
        if not np.isfinite(values).all():
            hint = (" (beyond float16's range: set the feature dtype to float32)"
                    if self.dtype == np.float16 and np.isfinite(tokens).all() else "")
            raise DataError(self.path, f"non-finite tokens for rows {start}..{start + len(tokens) - 1}{hint}")
        self._array[start:start + len(values)] = values

    def missing_rows(self, skip: Iterable[int] = ()) -> list[int]:
        """Rows with no chunk file, other than `skip` (the bad samples')."""
        skip = set(skip)
        suffix = Path(*["0"] * len(self.token_shape))
        root = self.tmp / _TOKENS / "c"
        return [i for i in range(self._array.shape[0]) if i not in skip and not (root / str(i) / suffix).is_file()]

    def finish(self, bad: Mapping[str, str]) -> Path:
        import zarr

        keys = list(zarr.open_group(str(self.tmp), mode="r").attrs["keys"])
        rows = {key: i for i, key in enumerate(keys)}
        missing = self.missing_rows(rows[k] for k in bad)
        if missing:
            self.abort()
            raise DataError(self.path, f"{len(missing)} sample(s) never written (first rows: {missing[:5]}); under "
                                       "several ranks the cache directory must be one filesystem every rank shares")
        group = zarr.open_group(str(self.tmp), mode="r+")
        group.attrs.update({"bad": dict(bad), "complete": True})
        replace_dir(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- building ---------------------------------------------------------------------------------------
class _Inputs(Dataset):
    """The build's dataset: item j -> (row, {name: input} or None, problem or None)."""

    def __init__(self, load: Callable[[int, Sequence[str]], dict[str, torch.Tensor]], rows: Sequence[int],
                 names: Sequence[str], on_bad_sample: OnBadSample):
        self.load, self.rows, self.names, self.on_bad_sample = load, list(rows), list(names), on_bad_sample

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        row = self.rows[j]
        try:
            return row, self.load(row, self.names), None
        except DataError as e:
            handle_bad_sample(e, self.on_bad_sample)  # raises under "error"
            return row, None, str(e)


def _collate(items):
    good = [(row, inputs) for row, inputs, _ in items if inputs is not None]
    bad = {row: problem for row, _, problem in items if problem is not None}
    rows = [row for row, _ in good]
    inputs = {name: torch.stack([x[name] for _, x in good]) for name in (good[0][1] if good else {})}
    return rows, inputs, bad


@dataclass
class _Plan:
    path: str
    fingerprint: str
    tmp: str | None = None  # set: (re)build into this temporary directory
    reason: str = ""


def store_identity(request: FeatureRequest, source: str, keys: Sequence[str], dtype: str) -> tuple[str, str, dict]:
    """(key, fingerprint, attrs) of the store for `request` over the samples `keys` of `source`."""
    encoder = module_digest(request.encoder)
    inputs = {**request.inputs, "dtype": dtype}
    key = digest([FEATURE_CACHE_FORMAT, request.name, encoder, inputs, source])
    fingerprint = digest([key, list(keys), list(request.files)])
    attrs = {"format": FEATURE_CACHE_FORMAT, "name": request.name, "key": key, "fingerprint": fingerprint,
             "encoder": encoder, "inputs": inputs, "source": source, "keys": list(keys)}
    return key, fingerprint, attrs


def _stale_reason(path: Path, fingerprint: str) -> str | None:
    """Why the store at `path` cannot be used (None: it can)."""
    attrs = _read_attrs(path)
    if attrs is None:
        return "not built yet"
    if attrs.get("format") != FEATURE_CACHE_FORMAT:
        return f"format {attrs.get('format')!r} is not {FEATURE_CACHE_FORMAT!r}"
    if not attrs.get("complete", False):
        return "its build did not finish"
    if attrs.get("fingerprint") != fingerprint:
        return "the samples or their files changed since it was built"
    return None


def ensure_feature_stores(root: str | os.PathLike, source: str, keys: Sequence[str],
                          requests: Sequence[FeatureRequest],
                          load: Callable[[int, Sequence[str]], dict[str, torch.Tensor]], *,
                          dtype: str = "float16", batch_size: int = 16, num_workers: int = 0,
                          on_bad_sample: OnBadSample = "error", strategy: Any = None,
                          context: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, FeatureStore]:
    """Open one store per request under `root`, building (or rebuilding) the ones that are missing
    or stale. Collective under several ranks: every rank calls it, with the same arguments.

    source: identifies the dataset (e.g. its index file's absolute path); keys: the samples, one per
    row (unique); load(row, names) -> {name: input tensor} for sample `row` (a DataError marks the
    sample bad under on_bad_sample="skip"; under "error" it stops the build); context: entered around
    each encoder call (the run's autocast). Returns {name: FeatureStore}."""
    if dtype not in FEATURE_DTYPES:
        raise ConfigError("feature_dtype", f"must be one of {FEATURE_DTYPES}, got {dtype!r}")
    if len(set(keys)) != len(keys):
        raise DataError(source, "sample keys repeat: a feature cache needs one key per sample")
    root = Path(root)
    rank, world = (strategy.global_rank, strategy.world_size) if strategy is not None else (0, 1)
    by_name = {r.name: r for r in requests}

    plans: dict[str, _Plan] | None = None
    if rank == 0:
        plans = {}
        for request in requests:
            if len(request.files) != len(keys):
                raise ValueError(f"{request.name}: {len(request.files)} file entries for {len(keys)} samples")
            key, fingerprint, attrs = store_identity(request, source, keys, dtype)
            path = root / f"{request.name}-{key[:16]}.zarr"
            plan = _Plan(str(path), fingerprint)
            reason = _stale_reason(path, fingerprint)
            if reason is None:
                log.info(f"[feature cache] {request.name}: reading {path}")
            else:
                with torch.no_grad(), context():
                    shape = tuple(request(request.example.to(_device_of(request.encoder))).shape[1:])
                plan.tmp, plan.reason = str(StoreWriter.create(path, shape, dtype, attrs).tmp), reason
            plans[request.name] = plan
    if world > 1:
        plans = strategy.broadcast(plans, src=0)
    building = [name for name, plan in plans.items() if plan.tmp is not None]

    if building:
        start = time.perf_counter()
        if rank == 0:
            for name in building:
                log.info(f"[feature cache] building {plans[name].path} ({plans[name].reason}): {len(keys)} samples "
                         f"on {world} rank(s)")
        mine = np.array_split(np.arange(len(keys)), world)[rank].tolist()
        writers = {name: StoreWriter.attach(plans[name].tmp, plans[name].path) for name in building}
        try:
            bad = _encode_rows(mine, building, by_name, writers, load, batch_size, num_workers, on_bad_sample,
                               context, " (rank 0's share)" if world > 1 else "")
        except BaseException:
            if world == 1:
                for writer in writers.values():
                    writer.abort()
            raise
        bad_keys = {keys[row]: problem for row, problem in bad.items()}
        for writer in writers.values():  # each rank says which samples it found bad, in a file of its own
            (writer.tmp / f".bad-{rank}.json").write_text(json.dumps(bad_keys))
        if world > 1:
            strategy.barrier("feature_cache_written")
        if rank == 0:
            for name in building:
                writer = writers[name]
                everyone: dict[str, str] = {}
                for r in range(world):
                    part = writer.tmp / f".bad-{r}.json"
                    if not part.is_file():
                        writer.abort()
                        raise DataError(writer.path, f"rank {r}'s share of the samples never arrived: the cache "
                                                     "directory must be on a filesystem every rank shares")
                    everyone.update(json.loads(part.read_text()))
                    part.unlink()
                writer.finish(everyone)
                skipped = f", {len(everyone)} bad sample(s) recorded" if everyone else ""
                log.info(f"[feature cache] wrote {writer.path} in {time.perf_counter() - start:.1f} s{skipped}")
        if world > 1:
            strategy.barrier("feature_cache_renamed")
    return {name: open_store(plans[name].path, plans[name].fingerprint) for name in plans}


def _encode_rows(rows: list[int], names: list[str], requests: Mapping[str, FeatureRequest],
                 writers: Mapping[str, StoreWriter], load, batch_size: int, num_workers: int,
                 on_bad_sample: OnBadSample, context, share: str = "") -> dict[int, str]:
    """Encode this rank's rows into the writers; returns {row: problem} of the bad samples."""
    bad: dict[int, str] = {}
    if not rows:
        return bad
    loader = DataLoader(_Inputs(load, rows, names, on_bad_sample), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    done, next_report, started = 0, 0.1, time.perf_counter()
    for batch_rows, inputs, problems in loader:
        bad.update(problems)
        done += len(batch_rows) + len(problems)
        if batch_rows:
            runs = _contiguous(batch_rows)
            for name in names:
                request = requests[name]
                with torch.no_grad(), context():
                    tokens = request(inputs[name].to(_device_of(request.encoder)))
                tokens = tokens.float().cpu().numpy()
                offset = 0
                for first, count in runs:
                    writers[name].write(first, tokens[offset:offset + count])
                    offset += count
        if done / len(rows) >= next_report:
            log.info(f"[feature cache] {done}/{len(rows)} samples{share} encoded ({time.perf_counter() - started:.0f} s)")
            next_report += 0.1
    return bad


def _contiguous(rows: list[int]) -> list[tuple[int, int]]:
    """[(first row, count)] of the runs of consecutive rows in `rows` (which is increasing)."""
    runs: list[tuple[int, int]] = []
    for row in rows:
        if runs and runs[-1][0] + runs[-1][1] == row:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((row, 1))
    return runs
