"""Checkpoint and export I/O that never leaves a half-written file behind.

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
from typing import Any

import numpy as np
import torch
from torch import nn


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
    from safetensors.torch import load_model

    load_model(module, str(Path(export_dir) / "model.safetensors"))
    return module
