"""Pooling across views: one token sequence per view (camera angle, crop, sensor) -> one sequence.

`ViewAggregation` combines V views' tokens (B, V, L, D), aligned by position (the same encoder ran
on each view), in one of four ways:

    tokens:  every view's tokens one after another        (B, V * L, D)   nothing is pooled
    mean:    the mean over views at each position           (B, L, D)
    max:     the maximum over views, channel by channel     (B, L, D)      a defect seen from one
                                                                            angle is not averaged away
    concat:  Linear(V * D -> D) of the views side by side   (B, L, D)      learns which view to trust

`tokens` leaves the pooling to whatever reads the sequence next (a cross-attention attends over all
views); the other modes hand it V times fewer tokens. The welding design note's image encoder
offers mean / max / concat over its five post-weld angles.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ViewMode = Literal["tokens", "mean", "max", "concat"]


class ViewAggregation(nn.Module):
    """(B, V, L, D) -> (B, V * L, D) for `tokens`, else (B, L, D). `views` (V) and `dim` (D) are
    needed by `concat` only, whose projection is sized by them; the other modes take any V."""

    def __init__(self, mode: ViewMode = "tokens", views: int | None = None, dim: int | None = None):
        super().__init__()
        if mode not in ("tokens", "mean", "max", "concat"):
            raise ValueError(f"unknown view aggregation {mode!r}; one of tokens, mean, max, concat")
        if mode == "concat" and (views is None or dim is None):
            raise ValueError("concat view aggregation needs the number of views and the token width")
        self.mode, self.views, self.dim = mode, views, dim
        self.proj = nn.Linear(views * dim, dim) if mode == "concat" else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        if self.proj is None:
            return
        # Start as the mean of the views (plus a little noise to break the symmetry between them),
        # so concat begins where `mean` is and learns from there to weight the views.
        eye = torch.eye(self.dim).repeat(1, self.views) / self.views  # (D, V*D)
        with torch.no_grad():
            self.proj.weight.copy_(eye + 0.02 * torch.randn_like(eye))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (B, views, tokens, dim), got {tuple(x.shape)}")
        if self.mode == "tokens":
            return x.flatten(1, 2)  # (B, V*L, D)
        if self.mode == "mean":
            return x.mean(dim=1)  # (B, L, D)
        if self.mode == "max":
            return x.amax(dim=1)  # (B, L, D)
        if x.shape[1] != self.views or x.shape[3] != self.dim:
            raise ValueError(f"concat view aggregation was built for {self.views} views of width {self.dim}, "
                             f"got {x.shape[1]} of width {x.shape[3]}")
        return self.proj(x.permute(0, 2, 1, 3).flatten(2))  # (B, L, V*D) -> (B, L, D)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", views={self.views}, dim={self.dim}" if self.proj is not None else "")
