"""Content fingerprints of samples, for the doctor's train/val/test overlap check.

A sample's fingerprint hashes, for each of its files, the size plus the first and last 64 KiB:
cheap for multi-GB videos, and two different recordings essentially never agree on all of it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 64 * 1024


def file_digest(path: str | os.PathLike, hasher=None):
    hasher = hasher or hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    hasher.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        hasher.update(f.read(_CHUNK))
        if size > 2 * _CHUNK:
            f.seek(size - _CHUNK)
            hasher.update(f.read(_CHUNK))
        elif size > _CHUNK:
            hasher.update(f.read())
    return hasher


def sample_fingerprint(paths: Iterable[str | os.PathLike | None]) -> str:
    """Hash of the contents of a sample's files (None entries, for missing modalities, are skipped;
    file names are not part of it, so a copy under another name is caught)."""
    hasher = hashlib.blake2b(digest_size=16)
    for path in paths:
        if path is not None and Path(path).is_file():
            file_digest(path, hasher)
    return hasher.hexdigest()
