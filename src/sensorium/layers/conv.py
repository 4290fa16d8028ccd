"""Small convolutional stems for from-scratch encoders (demo scale)."""

from __future__ import annotations

import math

import torch
from torch import nn


def with_coordinates(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C + 2, H, W): each position's normalised column and row (x, y in [-1, 1])
    appended as two channels (CoordConv, Liu et al. 2018), so the convolutions that follow can tell
    where on the grid they are."""
    B, _, H, W = x.shape
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype),
                                torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype), indexing="ij")
    return torch.cat([x, torch.stack([cols, rows])[None].expand(B, -1, -1, -1)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm instead of BatchNorm: statistics do not depend on the batch, so class-balanced
    # batches, DDP and single-sample inference all behave the same.
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvStem(nn.Module):
    """Convolution stages (conv3x3 s -> GroupNorm -> GELU -> conv3x3 -> GroupNorm -> GELU): the first
    with stride `first_stride`, the others with stride 2:
    (B, C_in, H, W) -> (B, widths[-1], H / (first_stride * 2^(n-1)), ...). A first stride of 1 keeps
    full resolution for the first stage, so one- or two-pixel details survive."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64), dims: int = 2,
                 first_stride: int = 2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        stages, previous = [], in_channels
        for i, width in enumerate(widths):
            stride = first_stride if i == 0 else 2
            stages += [
                conv(previous, width, 3, stride=stride, padding=1, bias=False), _norm(width), nn.GELU(),
                conv(width, width, 3, padding=1, bias=False), _norm(width), nn.GELU(),
            ]
            previous = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = previous

    def forward(self, x):
        return self.stages(x)
