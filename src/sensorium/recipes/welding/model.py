"""The welding network: four modality encoders -> cross-attention fusion -> L2-normalised embedding
(the classifier head of the optional cross-entropy term belongs to the task, not to the network)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sensorium.models.encoders import EncoderConfig, build_encoder
from sensorium.models.fusion import CrossAttentionFusion, FusionOutput
from sensorium.recipes.welding.reader import MODALITIES  # the batch contract's modality order


@dataclass
class WeldingNetConfig:
    """Sizes of the welding network (the `model.net` block in YAML)."""

    video: EncoderConfig = field(default_factory=EncoderConfig)
    images: EncoderConfig = field(default_factory=EncoderConfig)
    audio: EncoderConfig = field(default_factory=EncoderConfig)
    sensor: EncoderConfig = field(default_factory=lambda: EncoderConfig(depth=2))
    sensor_channels: int = 6
    fusion_dim: int = 128
    fusion_tokens: int = 4
    fusion_heads: int = 4
    embed_dim: int = 128
    dropout: float = 0.0


class WeldingNet(nn.Module):
    def __init__(self, config: WeldingNetConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict({
            m: build_encoder(m, getattr(config, m), config.sensor_channels) for m in MODALITIES
        })
        self.fusion = CrossAttentionFusion(
            {m: self.encoders[m].out_dim for m in MODALITIES}, config.fusion_dim, config.fusion_tokens,
            config.fusion_heads, config.embed_dim, config.dropout)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Token sequences of each modality: {m: (B, L_m, D_m)}."""
        return {m: self.encoders[m](batch[m]) for m in MODALITIES}

    def fuse(self, tokens: dict[str, torch.Tensor], present: torch.Tensor) -> FusionOutput:
        return self.fusion(tokens, present)

    def forward(self, batch: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        present = batch["present"] if present is None else present  # (B, 4) bool
        return self.fuse(self.encode(batch), present)


def welding_demo() -> WeldingNetConfig:
    """Small from-scratch encoders that train on 2 CPU cores in minutes."""
    return WeldingNetConfig(
        video=EncoderConfig(width=48, depth=3), images=EncoderConfig(width=48, depth=3),
        audio=EncoderConfig(width=48, depth=3), sensor=EncoderConfig(width=48, depth=2, patch=8),
        fusion_dim=96, fusion_tokens=4, fusion_heads=4, embed_dim=96)


def welding_paper(vjepa_dir: str, dinov2_dir: str, ast_dir: str) -> WeldingNetConfig:
    """The design note's system: frozen V-JEPA 2, DINOv2 and AST from local directories, a
    Transformer sensor encoder, fusion dim 512 with 4 tokens."""
    return WeldingNetConfig(
        video=EncoderConfig(pretrained=vjepa_dir), images=EncoderConfig(pretrained=dinov2_dir),
        audio=EncoderConfig(pretrained=ast_dir), sensor=EncoderConfig(width=256, depth=4, heads=8, patch=8),
        fusion_dim=512, fusion_tokens=4, fusion_heads=8, embed_dim=512, dropout=0.1)


WELDING_SIZES = {"demo": welding_demo, "paper": welding_paper}
