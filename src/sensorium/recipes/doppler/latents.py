"""The latents between the two stages: their per-channel statistics, the normalisation the DiT
trains in, and the content digests that tie latents to the VAE checkpoint they came from.

`sensorium extract doppler` computes `channel_statistics` of the TRAIN posterior means and records
the VAE's `file_digest`; the DiT task maps latents to its space with `normalise` ((z - mean) / std,
per channel) and its samples back with `denormalise`; `sensorium sample doppler` checks the VAE file
against the recorded digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def channel_statistics(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, h, w) -> per-channel mean and std (C,) over images and positions."""
    flat = latents.double().transpose(0, 1).flatten(1)  # (C, N*h*w)
    return flat.mean(1).float(), flat.std(1).clamp_min(1e-6).float()


def normalise(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (latents - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def denormalise(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return latents * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def file_digest(path: str | Path) -> str:
    """Content hash of a whole file (checkpoints: a few MB), read in blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
