"""Cross-attention fusion of several modalities through learnable fusion tokens.

    per modality m:  z_m = LayerNorm(q + CrossAttn_m(q, Linear_m(tokens_m)))      (B, K, dim)
    across modalities: w = softmax_m(score(z_m)) over the modalities present       (B, K, M)
                       fused = sum_m w_m z_m                                         (B, K, dim)
    aggregation:       e = LayerNorm(MLP(flatten(fused)));  embedding = e / |e|       (B, out_dim)

The weights w are the fusion tokens' attention share per modality (reported by the welding
recipe). A missing modality gets weight 0, so an embedding is produced from whatever is present.
"""

from __future__ import annotations

from dataclasses import dataclass

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
