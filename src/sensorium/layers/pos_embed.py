"""Fixed positional embeddings: 1-D and 2-D sin-cos (Transformer / MAE) and Fourier features of
3-D points (NeRF / 3DShape2VecSet)."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim): half sine, half cosine at geometric frequencies."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


@functools.lru_cache(maxsize=64)
def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) embedding of a row-major patch grid: half the channels encode the
    row, half the column (as in MAE's `get_2d_sincos_pos_embed`)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, rows.flatten()), sincos_1d(dim // 2, cols.flatten())], dim=1)


@functools.lru_cache(maxsize=64)
def sincos_1d_range(dim: int, length: int) -> torch.Tensor:
    """(length, dim) embedding of positions 0..length-1; cached per shape, treat as read-only."""
    return sincos_1d(dim, torch.arange(length))


def fourier_point_embed(points: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(..., D) points -> (..., D * 2 * num_freqs + D): [sin(2^k pi x), cos(2^k pi x), x]."""
    freqs = (2.0 ** torch.arange(num_freqs, device=points.device, dtype=points.dtype)) * math.pi  # (F,)
    angles = points[..., None] * freqs  # (..., D, F)
    angles = angles.flatten(-2)  # (..., D * F)
    return torch.cat([angles.sin(), angles.cos(), points], dim=-1)


class PointFourierEmbed(nn.Module):
    """Fourier features of the first `fourier_dims` coordinates (the xyz part), concatenated with
    any remaining raw features (for example a class one-hot), then a linear map to `dim`."""

    def __init__(self, in_dim: int, dim: int, num_freqs: int = 8, fourier_dims: int = 3):
        super().__init__()
        self.num_freqs = num_freqs
        self.fourier_dims = fourier_dims
        embed_dim = fourier_dims * (2 * num_freqs + 1) + (in_dim - fourier_dims)
        self.proj = nn.Linear(embed_dim, dim)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """The features before the linear map (..., embed_dim): forward is proj(features)."""
        xyz, extra = points[..., : self.fourier_dims], points[..., self.fourier_dims :]
        return torch.cat([fourier_point_embed(xyz, self.num_freqs), extra], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(points))  # (..., dim)
