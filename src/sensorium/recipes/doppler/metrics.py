"""The VAE's validation metric, below the task that picks best.ckpt by it (`sensorium eval doppler`
reports it on reconstructions too)."""

from __future__ import annotations

import torch


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1]."""
    mse = (x.float() - y.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)
