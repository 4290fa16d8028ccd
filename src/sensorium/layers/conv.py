"""Small convolutional stems for from-scratch encoders (demo scale)."""

from __future__ import annotations

import math

from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm instead of BatchNorm: statistics do not depend on the batch, so class-balanced
    # batches, DDP and single-sample inference all behave the same.
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvStem(nn.Module):
    """Stride-2 convolution stages (conv3x3 s2 -> GroupNorm -> GELU -> conv3x3 -> GroupNorm -> GELU),
    each halving the resolution: (B, C_in, H, W) -> (B, widths[-1], H / 2^n, W / 2^n)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64), dims: int = 2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        stages, previous = [], in_channels
        for width in widths:
            stages += [
                conv(previous, width, 3, stride=2, padding=1, bias=False), _norm(width), nn.GELU(),
                conv(width, width, 3, padding=1, bias=False), _norm(width), nn.GELU(),
            ]
            previous = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = previous

    def forward(self, x):
        return self.stages(x)
