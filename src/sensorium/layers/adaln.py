"""Adaptive layer-norm modulation (adaLN-Zero; Peebles & Xie, "Scalable Diffusion Models with
Transformers", 2023).

A conditioning vector c (B, cond_dim) is mapped to per-channel shifts, scales and gates:
    h = norm(x) * (1 + scale) + shift;   x = x + gate * block(h)
The map is initialised to zero, so every gate is 0 and every residual block starts as the identity
(the "Zero" of adaLN-Zero); DiT found this the best of its conditioning schemes.
"""

from __future__ import annotations

import torch
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, C) normalised tokens; shift, scale (B, C) -> x * (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZero(nn.Module):
    """c (B, cond_dim) -> `chunks` tensors of (B, dim) (e.g. shift, scale, gate for attention and
    for the MLP: 6), through SiLU and one zero-initialised linear layer."""

    def __init__(self, cond_dim: int, dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(cond_dim, chunks * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zero: every modulation starts at shift 0, scale 0, gate 0, so each residual block is the
        # identity at initialisation (adaLN-Zero).
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(nn.functional.silu(c)).chunk(self.chunks, dim=-1)
