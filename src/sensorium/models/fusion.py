"""Fusion of several inputs: `CrossAttentionFusion` of modalities through learnable fusion tokens
(welding), and `FeatureFusion` of per-encoder features already aligned to one space (rgbpc, below).

Cross-attention fusion:

    per modality m:  z_m = LayerNorm(q + CrossAttn_m(q, Linear_m(tokens_m)))      (B, K, dim)
    across modalities: w = softmax_m(score(z_m)) over the modalities present       (B, K, M)
                       fused = sum_m w_m z_m                                         (B, K, dim)
    aggregation:       e = LayerNorm(MLP(flatten(fused)));  embedding = e / |e|       (B, out_dim)

The weights w are the fusion tokens' attention share per modality (reported by the welding
recipe). A missing modality gets weight 0, so an embedding is produced from whatever is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.layers.attention import CrossAttention
from sensorium.layers.mlp import Mlp


@dataclass
class FusionOutput:
    embedding: torch.Tensor  # (B, out_dim), L2-normalised
    features: torch.Tensor  # (B, out_dim), before L2 normalisation (input of a classifier head)
    modality_weights: torch.Tensor  # (B, K, M), sums to 1 over present modalities (0 if none present)


class CrossAttentionFusion(nn.Module):
    def __init__(self, modality_dims: dict[str, int], dim: int = 128, num_tokens: int = 4, num_heads: int = 4,
                 out_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.modalities = tuple(modality_dims)
        self.fusion_tokens = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in modality_dims.items()})
        self.cross_attn = nn.ModuleDict({m: CrossAttention(dim, dim, num_heads, proj_drop=dropout)
                                         for m in self.modalities})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})
        self.modality_score = nn.Linear(dim, 1)
        self.aggregate = Mlp(num_tokens * dim, 2 * out_dim, out_dim, dropout=dropout)
        self.out_norm = nn.LayerNorm(out_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        nn.init.normal_(self.fusion_tokens, std=0.02)  # as ViT's cls token
        # Zero-init the modality scores: fusion starts as the plain mean of the present modalities
        # and learns to weight them, instead of starting from a random preference.
        nn.init.zeros_(self.modality_score.weight)
        nn.init.zeros_(self.modality_score.bias)

    def no_weight_decay(self) -> set[str]:
        return {"fusion_tokens"}

    def forward(self, tokens: dict[str, torch.Tensor], present: torch.Tensor) -> FusionOutput:
        """tokens[m]: (B, L_m, d_m); present: (B, M) bool in `self.modalities` order."""
        B = present.shape[0]
        per_modality = self.attend_each(tokens, B)  # (B, M, K, dim)
        weights = self.modality_weights(per_modality, present)  # (B, K, M)
        fused = torch.einsum("bkm,bmkd->bkd", weights, per_modality)  # (B, K, dim)
        features = self.out_norm(self.aggregate(fused.flatten(1)))  # (B, out_dim)
        return FusionOutput(F.normalize(features, dim=-1), features, weights)

    def attend_each(self, tokens: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        queries = self.fusion_tokens.expand(batch_size, -1, -1)  # (B, K, dim)
        outputs = []
        for m in self.modalities:
            context = self.proj[m](tokens[m])  # (B, L_m, dim)
            outputs.append(self.norm[m](queries + self.cross_attn[m](queries, context)))  # (B, K, dim)
        return torch.stack(outputs, dim=1)  # (B, M, K, dim)

    def modality_weights(self, per_modality: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        scores = self.modality_score(per_modality).squeeze(-1).transpose(1, 2)  # (B, K, M)
        scores = scores.float().masked_fill(~present[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, K, M)
        return torch.nan_to_num(weights, nan=0.0).to(per_modality.dtype)  # no modality present -> 0


# --- fusing aligned features of several encoders ----------------------------------------------------
FusionMode = Literal["weighted", "gate", "concat"]


@dataclass
class FeatureFusionOutput:
    fused: torch.Tensor  # (..., D)
    weights: torch.Tensor | None  # (..., E): sums to 1 over the inputs; None for concat


class FeatureFusion(nn.Module):
    """Fuses E feature vectors of the same width D, already aligned to one space (one per encoder, at
    one point or token): (..., E, D) -> (..., D).

    - weighted: fused = sum_e w_e x_e with w = softmax(learned logits), one weight per input shared by
      every row (the rgbpc note's WeightedFusion);
    - gate: per row, w = softmax over the inputs of a linear map of their concatenation (Cambrian's
      per-token gates over vision encoders), so each point can trust another encoder;
    - concat: Linear(E * D -> D) of the concatenation (no weights; `input_shares` reports each input's
      share of the weight norm instead).
    """

    def __init__(self, num_inputs: int, dim: int, mode: FusionMode = "weighted"):
        super().__init__()
        if mode not in ("weighted", "gate", "concat"):
            raise ValueError(f"unknown fusion mode {mode!r}; one of weighted, gate, concat")
        self.mode, self.num_inputs, self.dim = mode, num_inputs, dim
        if mode == "weighted":
            self.logits = nn.Parameter(torch.zeros(num_inputs))
        elif mode == "gate":
            self.gate = nn.Linear(num_inputs * dim, num_inputs)
        else:
            self.proj = nn.Linear(num_inputs * dim, dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # weighted and gate start as the plain mean of the inputs (zero logits), so no encoder is
        # preferred before the data says so; concat starts as a scaled mean of the inputs too.
        if self.mode == "weighted":
            nn.init.zeros_(self.logits)
        elif self.mode == "gate":
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        else:
            nn.init.zeros_(self.proj.bias)
            eye = torch.eye(self.dim).repeat(1, self.num_inputs) / self.num_inputs  # (D, E*D)
            with torch.no_grad():
                self.proj.weight.copy_(eye + 0.02 * torch.randn_like(eye))

    def no_weight_decay(self) -> set[str]:
        return {"logits"} if self.mode == "weighted" else set()

    def forward(self, x: torch.Tensor) -> FeatureFusionOutput:
        if x.shape[-2:] != (self.num_inputs, self.dim):
            raise ValueError(f"expected (..., {self.num_inputs}, {self.dim}) inputs, got {tuple(x.shape)}")
        if self.mode == "concat":
            return FeatureFusionOutput(self.proj(x.flatten(-2)), None)  # (..., D)
        if self.mode == "weighted":
            weights = torch.softmax(self.logits.float(), dim=0).expand(*x.shape[:-2], -1)  # (..., E)
        else:
            weights = torch.softmax(self.gate(x.flatten(-2)).float(), dim=-1)  # (..., E)
        fused = torch.einsum("...e,...ed->...d", weights.to(x.dtype), x)  # (..., D)
        return FeatureFusionOutput(fused, weights)

    @torch.no_grad()
    def input_shares(self) -> torch.Tensor:
        """(E,) each input's share: the softmax weights (weighted), or the share of the projection's
        weight norm (concat); for gate the shares are per row (see the forward's weights)."""
        if self.mode == "weighted":
            return torch.softmax(self.logits.float(), dim=0)
        if self.mode == "concat":
            norms = self.proj.weight.float().view(self.dim, self.num_inputs, self.dim).norm(dim=(0, 2))  # (E,)
            return norms / norms.sum()
        raise ValueError("gate fusion has per-row weights; read them from the forward pass")
