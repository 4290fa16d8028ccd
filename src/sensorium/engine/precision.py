"""Autocast for the training loops a task runs by itself, outside Lightning's precision plugin: a
probe fitted during an evaluation, an encoder's pretraining, an evaluation's classifier."""

from __future__ import annotations

import torch


def bf16_autocast(device_type: str, enabled: bool = True) -> torch.autocast:
    """bfloat16 autocast for one step of a loop that trains, with the cast cache off.

    The cache keeps each weight's bfloat16 copy until the outermost autocast region ends. A loop
    running inside one (an evaluation hook under `torch.autocast(enabled=False)`, a fit's precision
    context) would then reuse the first step's copies while the optimiser moves the float32 weights:
    the loop trains on stale weights and diverges. Without the cache a weight is cast at each use,
    which for a network that uses each weight once per forward is the same arithmetic."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)
