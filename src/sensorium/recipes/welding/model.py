"""The welding network: four modality encoders -> cross-attention fusion -> L2-normalised embedding
(the classifier head of the optional cross-entropy term belongs to the task, not to the network)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sensorium.layers.pooling import ViewAggregation, ViewMode
from sensorium.models.encoders import EncoderConfig, PretrainedEncoder, build_encoder
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
    # Feed the sensor encoder the series plus a within-run standardised copy (`with_run_relative`).
    # SensorTransformer already adds a within-run copy of whatever it is given, so with the flag its
    # stem sees the TRAIN-standardised series once and the within-run one three times (the copy of
    # the copy is the copy again): the flag re-weights the two views towards the run-relative one;
    # it adds no information. Measured (docs/notes/welding.md, 2026-12-07): TEST k-NN higher with it
    # on every dataset tried, most where the Porosity pair (a current step away from the run's own
    # level) decides the result. Why the weighting helps is not ablated further.
    sensor_relative: bool = False
    image_views: ViewMode = "tokens"
    """How the post-weld photos' token sequences, one per angle, become the images' tokens
    (`sensorium.layers.pooling.ViewAggregation`): tokens (every angle's tokens side by side, the
    fusion's cross-attention attending over all of them), mean, max (a defect seen from one angle
    survives), or concat (a learned Linear over the angles side by side; needs `image_angles`)."""
    image_angles: int | None = None
    """Post-weld photos per sample (the data's `preprocess.num_images`); needed by `image_views:
    concat` only, whose projection is sized by it."""
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
        self.image_views = ViewAggregation(config.image_views, config.image_angles, self.encoders["images"].out_dim)
        self.fusion = CrossAttentionFusion(
            {m: self.encoders[m].out_dim for m in MODALITIES}, config.fusion_dim, config.fusion_tokens,
            config.fusion_heads, config.embed_dim, config.dropout)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Token sequences of each modality: {m: (B, L_m, D_m)}.

        A batch may carry a modality's encoder output instead of its input: `<m>_tokens` (a frozen
        encoder's tokens read from a feature cache; images per angle, (B, N, L, D)). That encoder is
        then skipped and its tokens used as they are."""
        inputs = dict(batch)
        if self.config.sensor_relative and "sensor" in batch:
            inputs["sensor"] = with_run_relative(batch["sensor"])
        tokens = {m: batch[f"{m}_tokens"].float() if f"{m}_tokens" in batch else self.encoders[m](inputs[m])
                  for m in MODALITIES}
        if "images_tokens" not in batch:
            # Image encoders give the angles' tokens one after another, angle by angle: (B, N*L, D).
            images, (B, N) = tokens["images"], batch["images"].shape[:2]
            tokens["images"] = images.reshape(B, N, -1, images.shape[-1])
        tokens["images"] = self.image_views(tokens["images"])  # (B, N, L, D) in
        return tokens

    def frozen_encoders(self) -> dict[str, nn.Module]:
        """{modality: encoder} of the pretrained encoders built frozen (their outputs depend on the
        input alone, as long as nothing unfreezes them)."""
        return {m: e for m, e in self.encoders.items() if isinstance(e, PretrainedEncoder) and e.freeze}

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
