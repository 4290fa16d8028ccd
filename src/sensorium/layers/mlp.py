"""Feed-forward blocks of transformers and heads: the two-layer MLP and the gated SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ):
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        out_dim = out_dim or dim
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020, "GLU variants improve Transformer"; LLaMA, LightningDiT):
    W3 (silu(W1 x) * W2 x). `hidden_dim` is the width of each gate branch; with mlp_ratio r, LLaMA
    and LightningDiT use 2/3 r dim so the block costs about what an r-wide GELU MLP costs."""

    def __init__(self, dim: int, hidden_dim: int | None = None, out_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        hidden_dim = hidden_dim or int(2 * 4 * dim / 3)
        self.fc12 = nn.Linear(dim, 2 * hidden_dim)  # both branches in one matmul
        self.fc3 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc12(x).chunk(2, dim=-1)  # each (..., hidden)
        return self.drop(self.fc3(self.drop(F.silu(gate) * value)))
