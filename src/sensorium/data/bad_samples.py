"""What a reader does with a sample it cannot use: `on_bad_sample: error` (default) raises one
DataError naming the file and the problem; `skip` logs the sample, counts it and goes on.

Datasets return None for a skipped sample; `collate_skipping` drops those and records how many were
dropped in the batch (`batch["skipped"]`), so the count survives DataLoader worker processes and the
task can log it.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch.utils.data import default_collate

from sensorium.errors import ConfigError, DataError

OnBadSample = Literal["error", "skip"]
log = logging.getLogger("sensorium.data")


def handle_bad_sample(error: DataError, policy: OnBadSample) -> None:
    """Raise under 'error'; log under 'skip' (the caller then returns None for the sample)."""
    if policy == "error":
        raise error
    if policy != "skip":
        raise ConfigError("on_bad_sample", f"must be 'error' or 'skip', got {policy!r}")
    log.warning("skipping bad sample: %s", error)


def collate_skipping(samples: list[dict | None]) -> dict:
    """default_collate over the samples that are not None, plus `skipped` (LongTensor scalar)."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return {"skipped": torch.tensor(len(samples))}
    batch = default_collate(kept)
    batch["skipped"] = torch.tensor(len(samples) - len(kept))
    return batch
