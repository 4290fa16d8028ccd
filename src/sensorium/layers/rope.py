"""Rotary position embedding (RoPE; Su et al. 2021) for 2-D token grids.

Queries and keys are rotated, pair of channels by pair, by an angle proportional to the token's
position, so their dot product depends on the offset between two tokens only. On a 2-D grid
(axial RoPE, as EVA-02 and LightningDiT use it) the first half of each head's channels rotates
with the row index, the second half with the column index.

Convention: channel pairs are adjacent, (2i, 2i + 1), rotated by position * theta^(-2i / d_axis).
"""

from __future__ import annotations

import functools

import torch


def rope_angles(dim: int, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim // 2) rotation angles, one per channel pair."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even number of channels, got {dim}")
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    return positions.to(torch.float64)[:, None] * freqs[None, :]


@functools.lru_cache(maxsize=32)
def rope_2d(head_dim: int, grid_h: int, grid_w: int,
            theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (grid_h * grid_w, head_dim // 2), for a row-major grid: the first
    head_dim / 4 pairs follow the row, the rest the column. Cached per shape; treat as read-only."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    angles = torch.cat([rope_angles(head_dim // 2, rows.flatten(), theta),
                        rope_angles(head_dim // 2, cols.flatten(), theta)], dim=1)  # (N, head_dim/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, N, d) queries or keys by (N, d/2) angles given as cos and sin."""
    pairs = x.unflatten(-1, (-1, 2))  # (B, heads, N, d/2, 2)
    a, b = pairs.unbind(-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)  # (B, heads, N, d)
