"""Checkpoint and export I/O that never leaves a half-written file behind, and the one loader of
tasks and exports every recipe uses (`load_task`, `load_export`).

Every write goes to a temporary file in the destination directory, is flushed to disk, and is then
renamed over the destination (`os.replace` is atomic on POSIX): a kill, an exception or a full disk
mid-write leaves the previous `last.ckpt` (or export) intact and loadable.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from sensorium.errors import ConfigError, DataError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and atomically move the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the result should look like any other file
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a sensorium checkpoint with `weights_only=True` (no arbitrary unpickling)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def export_model(module: nn.Module, config: dict, export_dir: str | os.PathLike) -> Path:
    """Write `model.safetensors` (tied tensors deduplicated by safetensors) and `config.json`."""
    from safetensors.torch import save_model

    export_dir = Path(export_dir)
    weights = atomic_write(export_dir / "model.safetensors", lambda tmp: save_model(module, str(tmp)))
    atomic_write_json(export_dir / "config.json", config)
    return weights


def load_export(module: nn.Module, export_dir: str | os.PathLike) -> nn.Module:
    """`module` with the weights of EXPORT_DIR/model.safetensors; an export whose tensors do not fit
    it is a ConfigError naming the file and the first mismatching keys."""
    from safetensors.torch import load_model

    path = Path(export_dir) / "model.safetensors"
    if not path.is_file():
        raise ConfigError(path, "no such export (`sensorium fit` writes RUN/export/model.safetensors)")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except RuntimeError as e:  # shapes that differ
        raise ConfigError(path, f"weights do not fit {type(module).__name__}: {_last_line(e)}") from None
    if missing or unexpected:
        raise ConfigError(path, f"weights do not fit {type(module).__name__}: missing {sorted(missing)[:5]}, "
                                f"unexpected {sorted(unexpected)[:5]}")
    return module


def read_export_config(export_dir: str | os.PathLike, task: str) -> dict:
    """EXPORT_DIR/config.json of an export written by the task class named `task`."""
    path = Path(export_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(export_dir, "not an export directory (no config.json; `sensorium fit` writes RUN/export)")
    config = json.loads(path.read_text())
    if config.get("task") != task:
        raise ConfigError(export_dir, f"exported by {config.get('task')!r}, not by {task}")
    return config


T = TypeVar("T", bound=nn.Module)


def load_task(path: str | os.PathLike | None, cls: type[T], adapt_hparams: Callable[[dict], dict] | None = None,
              ignore_prefixes: tuple[str, ...] = ()) -> T:
    """The task `cls` rebuilt from a checkpoint's hyperparameters and weights (weights_only), in eval
    mode: the one loader every recipe uses. Every way a file can fail to be that task is a
    ConfigError / DataError naming the file and what did not fit, never a network with random weights.

    adapt_hparams: changes the hyperparameters before the task is built (e.g. leave out parts only
    training needs); ignore_prefixes: weights of those parts, present in the file, that are not built.
    """
    if path is None:
        raise ConfigError("--ckpt", f"no {cls.__name__} checkpoint given")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, f"no such {cls.__name__} checkpoint")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as e:  # any unpickling or format failure: not a checkpoint we can trust
        raise DataError(path, f"cannot read as a checkpoint ({type(e).__name__}: {e})") from None
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise DataError(path, "not a Lightning checkpoint of a sensorium task (no hyper_parameters / state_dict)")
    written_by = (checkpoint.get("sensorium") or {}).get("task")
    if written_by is not None and written_by != cls.__qualname__:
        raise ConfigError(path, f"is a {written_by} checkpoint, not a {cls.__qualname__} one")
    try:
        task = cls(**(adapt_hparams(hparams) if adapt_hparams else hparams))
    except TypeError as e:  # hyperparameters of another task
        raise ConfigError(path, f"is not a {cls.__qualname__} checkpoint ({e})") from None
    try:
        missing, unexpected = task.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ConfigError(path, f"weights do not fit the {cls.__qualname__} its hyperparameters describe: "
                                f"{_last_line(e)}") from None
    unexpected = [k for k in unexpected if not k.startswith(ignore_prefixes)] if ignore_prefixes else unexpected
    if missing or unexpected:
        raise ConfigError(path, f"weights do not fit the {cls.__qualname__} its hyperparameters describe: missing "
                                f"{missing[:5]}, unexpected {unexpected[:5]}")
    task.checkpoint_path = path
    return task.eval()


def _last_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1].strip()
