"""Modality encoders: each maps one modality's batch to a token sequence (B, L, out_dim).

Small from-scratch encoders (demo scale, train on CPU in minutes) and encoders backed by
`transformers` models loaded from a LOCAL directory with `from_pretrained(local_dir)` (paper scale:
V-JEPA 2 for video, DINOv2 for images, AST for audio). Nothing here downloads anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sensorium.errors import ConfigError
from sensorium.layers.attention import TransformerBlock
from sensorium.layers.conv import ConvStem
from sensorium.layers.pos_embed import sincos_1d_range, sincos_2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AST normalises log-mel fbanks with AudioSet statistics (Gong et al. 2021): (x - mean) / (2 * std).
AST_MEAN, AST_STD = -4.2677393, 4.5689974


@dataclass
class EncoderConfig:
    """One modality's encoder (the `net.<modality>` block in YAML)."""

    pretrained: str | None = None
    """Local directory of a `transformers` checkpoint (config.json + weights); None: a small
    encoder trained from scratch. Never a hub name: nothing is downloaded."""
    freeze: bool = True
    """Pretrained encoders only: keep the backbone's weights fixed (and run it without autograd)."""
    width: int = 64
    """From scratch: channels of the last conv stage / token width of the sensor Transformer."""
    depth: int = 3
    """From scratch: conv stages (video, images, audio) or Transformer layers (sensor)."""
    heads: int = 4
    """Sensor Transformer heads."""
    patch: int = 4
    """Sensor Transformer: time steps per token (a power of two: the conv stem halves it per stage)."""
    first_stride: int = 2
    """Image CNN: stride of the first stage; 1 keeps full resolution there (small pores survive)."""


# --- small from-scratch encoders ------------------------------------------------------------------
def _widths(width: int, depth: int) -> tuple[int, ...]:
    return tuple(max(8, width >> (depth - 1 - i)) for i in range(depth))  # e.g. (16, 32, 64)


class ConvVideoEncoder(nn.Module):
    """(B, T, 3, H, W) frames in [0, 1] -> (B, T, width): a shared per-frame CNN pooled to one token
    per frame (mean and max pooling, so a few bright spatter sparks are not averaged away), plus
    a temporal sin-cos embedding and one Transformer block across frames (flicker is a change over time)."""

    def __init__(self, width: int = 64, depth: int = 3, heads: int = 4):
        super().__init__()
        self.stem = ConvStem(3, _widths(width, depth))
        self.proj = nn.Linear(2 * width, width)
        self.temporal = TransformerBlock(width, heads)
        self.out_dim = width

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, T = video.shape[:2]
        maps = self.stem(video.flatten(0, 1))  # (B*T, C, h, w)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)  # (B*T, 2C)
        tokens = self.proj(pooled).view(B, T, -1)  # (B, T, C)
        tokens = tokens + sincos_1d_range(self.out_dim, T).to(tokens)
        return self.temporal(tokens)  # (B, T, C)


class ConvImageEncoder(nn.Module):
    """(B, N, 3, S, S) post-weld photos from N angles -> (B, N * h * w, width): a shared CNN whose
    final feature map becomes tokens, with 2-D sin-cos positions plus a learned per-angle embedding.
    Spatial tokens keep small defects (pores, cracks) addressable by the fusion's cross-attention."""

    def __init__(self, width: int = 64, depth: int = 3, max_angles: int = 16, first_stride: int = 2):
        super().__init__()
        self.stem = ConvStem(3, _widths(width, depth), first_stride=first_stride)
        self.angle_embed = nn.Parameter(torch.zeros(1, max_angles, 1, width))
        nn.init.normal_(self.angle_embed, std=0.02)
        self.out_dim = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, N = images.shape[:2]
        maps = self.stem(images.flatten(0, 1))  # (B*N, C, h, w)
        C, h, w = maps.shape[1:]
        tokens = maps.flatten(2).transpose(1, 2)  # (B*N, h*w, C)
        tokens = tokens + sincos_2d(C, h, w).to(tokens)
        tokens = tokens.view(B, N, h * w, C) + self.angle_embed[:, :N]  # (B, N, h*w, C)
        return tokens.flatten(1, 2)  # (B, N*h*w, C)

    def no_weight_decay(self) -> set[str]:
        return {"angle_embed"}


class ConvAudioEncoder(nn.Module):
    """(B, 1, n_mels, frames) log-mel -> (B, h * w, width): a CNN over the spectrogram whose
    feature map (frequency x time) becomes tokens with 2-D sin-cos positions."""

    def __init__(self, width: int = 64, depth: int = 3):
        super().__init__()
        self.stem = ConvStem(1, _widths(width, depth))
        self.out_dim = width

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # Per-sample standardisation: loudness varies with microphone placement (a nuisance);
        # the shape of the spectrum over time carries the arc's state.
        audio = (audio - audio.mean(dim=(2, 3), keepdim=True)) / (audio.std(dim=(2, 3), keepdim=True) + 1e-5)
        maps = self.stem(audio)  # (B, C, h, w)
        C, h, w = maps.shape[1:]
        return maps.flatten(2).transpose(1, 2) + sincos_2d(C, h, w).to(maps)  # (B, h*w, C)


class SensorTransformer(nn.Module):
    """(B, L, channels) standardised sensor series -> (B, L / patch, width): a 1-D convolutional stem
    that downsamples by `patch` (a power of two) into tokens, sin-cos positions, `depth` Transformer
    blocks. The stem sees local shape (a step, a spike, a ramp) that a linear patch embedding finds
    hard to learn from few samples; the Transformer relates the tokens across the whole run.

    Each channel is seen twice: as given (standardised with dataset statistics, so absolute levels
    stay comparable between runs) and standardised within the sample (so a step relative to the
    run's own set-point looks the same whatever the set-point: set-points vary widely between runs)."""

    def __init__(self, channels: int, width: int = 64, depth: int = 2, heads: int = 4, patch: int = 4):
        super().__init__()
        stages = int(math.log2(patch))
        if 2**stages != patch or stages < 1:
            raise ValueError(f"sensor patch must be a power of two >= 2, got {patch}")
        self.stem = ConvStem(2 * channels, _widths(width, stages), dims=1)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        within = (series - series.mean(dim=1, keepdim=True)) / (series.std(dim=1, keepdim=True) + 1e-5)
        views = torch.cat([series, within], dim=2).transpose(1, 2)  # (B, 2*channels, L)
        tokens = self.stem(views).transpose(1, 2)  # (B, L/patch, C)
        tokens = tokens + sincos_1d_range(self.out_dim, tokens.shape[1]).to(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


# --- pretrained encoders from a local transformers checkpoint --------------------------------------
def load_pretrained(local_dir: str | Path) -> nn.Module:
    """`AutoModel.from_pretrained` on a local directory only (`local_files_only`): a hub name or a
    missing directory is an error here, not a download."""
    from transformers import AutoModel

    local_dir = Path(local_dir)
    if not (local_dir / "config.json").is_file():
        raise ConfigError(local_dir, f"not a local transformers checkpoint (no config.json); "
                                "download the weights once elsewhere and point `pretrained` at that directory")
    return AutoModel.from_pretrained(str(local_dir), local_files_only=True)


class PretrainedEncoder(nn.Module):
    """A `transformers` backbone as a token encoder. `modality` picks how inputs are fed:

    - video  (B, T, 3, H, W) in [0, 1] -> `pixel_values_videos` (V-JEPA 2, VideoMAE), ImageNet-normalised;
    - images (B, N, 3, H, W) in [0, 1] -> `pixel_values` per angle (DINOv2), tokens of all angles concatenated;
    - audio  (B, 1, n_mels, frames) log-mel -> `input_values` (B, frames, n_mels) (AST), AudioSet-normalised.

    Output: the backbone's last hidden states (B, L, hidden_size). A frozen backbone runs under
    `torch.no_grad()` in eval mode (no dropout, no activation memory).
    """

    def __init__(self, local_dir: str | Path, modality: str, freeze: bool = True):
        super().__init__()
        if modality not in ("video", "images", "audio"):
            raise ValueError(f"no pretrained input convention for modality {modality!r}")
        self.modality = modality
        self.backbone = load_pretrained(local_dir)
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False).eval()
        self.out_dim = int(self.backbone.config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # a frozen backbone never switches dropout back on
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self._tokens(x)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "video":
            frames = (x.flatten(0, 1) - self.mean) / self.std  # (B*T, 3, H, W)
            out = self.backbone(pixel_values_videos=frames.view_as(x), skip_predictor=True)
            return out.last_hidden_state  # (B, L, D)
        if self.modality == "images":
            B, N = x.shape[:2]
            pixels = (x.flatten(0, 1) - self.mean) / self.std  # (B*N, 3, H, W)
            hidden = self.backbone(pixel_values=pixels).last_hidden_state  # (B*N, L, D)
            return hidden.view(B, N * hidden.shape[1], -1)  # (B, N*L, D)
        fbank = (x.squeeze(1).transpose(1, 2) - AST_MEAN) / (2 * AST_STD)  # (B, frames, n_mels)
        return self.backbone(input_values=fbank).last_hidden_state  # (B, L, D)


def build_encoder(modality: str, config: EncoderConfig, sensor_channels: int = 6) -> nn.Module:
    """The encoder of one modality: pretrained when `config.pretrained` names a local directory."""
    if config.pretrained is not None:
        return PretrainedEncoder(config.pretrained, modality, config.freeze)
    if modality == "video":
        return ConvVideoEncoder(config.width, config.depth, config.heads)
    if modality == "images":
        return ConvImageEncoder(config.width, config.depth, first_stride=config.first_stride)
    if modality == "audio":
        return ConvAudioEncoder(config.width, config.depth)
    if modality == "sensor":
        return SensorTransformer(sensor_channels, config.width, config.depth, config.heads, config.patch)
    raise ValueError(f"unknown modality {modality!r}")
