"""Deterministic splits (per-rank shards: `sensorium.data.datamodule`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensorium.errors import ConfigError


def stratified_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve `fraction` of every class (rounded, at least 1 for classes with >= 2 samples and
    fraction > 0) into a held-out part. Returns sorted (kept, held_out) positions; depends only on
    the labels and the seed."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("fraction", f"must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        held_out.extend(members[:n].tolist())
    held_out = np.sort(np.asarray(held_out, dtype=np.int64))
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out
