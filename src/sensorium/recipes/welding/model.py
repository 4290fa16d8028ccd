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
    # Also give the sensor encoder each channel standardised over its own run (mean and std over
    # time), beside the TRAIN-standardised one. Set-points differ widely between runs, so a fault
    # that shows as a step of a channel away from the run's own level (a current jump, a gas drop)
    # is a change of shape the encoder would otherwise have to separate from a change of level.
    sensor_relative: bool = False
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
            m: build_encoder(m, getattr(config, m), config.sensor_channels * (1 + config.sensor_relative))
            for m in MODALITIES
        })
        self.fusion = CrossAttentionFusion(
            {m: self.encoders[m].out_dim for m in MODALITIES}, config.fusion_dim, config.fusion_tokens,
            config.fusion_heads, config.embed_dim, config.dropout)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Token sequences of each modality: {m: (B, L_m, D_m)}."""
        inputs = dict(batch)
        if self.config.sensor_relative:
            inputs["sensor"] = with_run_relative(batch["sensor"])
        return {m: self.encoders[m](inputs[m]) for m in MODALITIES}

    def fuse(self, tokens: dict[str, torch.Tensor], present: torch.Tensor) -> FusionOutput:
        return self.fusion(tokens, present)

    def forward(self, batch: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        present = batch["present"] if present is None else present  # (B, 4) bool
        return self.fuse(self.encode(batch), present)


def with_run_relative(sensor: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """(B, L, C) -> (B, L, 2C): the series, then each channel standardised over its own L steps
    (instance normalisation; a missing series of zeros stays zeros)."""
    mean = sensor.mean(dim=1, keepdim=True)
    std = sensor.std(dim=1, keepdim=True)
    return torch.cat([sensor, (sensor - mean) / (std + eps)], dim=-1)
