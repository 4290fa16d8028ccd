"""The frozen encoder whose patch features the VAE's latent is aligned to (VA-VAE's "vision
foundation model"), on the latent's grid.

- `Dinov2PatchFeatures` (paper): DINOv2 from a local `transformers` directory, as VA-VAE uses it;
  grayscale spectrograms are repeated to three channels, resized to `input_size` (a multiple of the
  patch size) and ImageNet-normalised; the patch tokens (class and register tokens dropped) form a
  (B, D, g, g) map.
- `RandomConvFeatures` (demo): a small conv net with fixed random weights (seeded, never trained).
  No pretrained weights can be downloaded here, and a random conv net's features still encode local
  image structure (random-feature networks preserve distances between patches); the alignment then
  acts as a structural prior on the latent rather than a semantic one. It is not DINOv2, and the
  demo's numbers say nothing about how much DINOv2 alignment would help.

Both run without gradients, in eval mode, whatever the task's mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sensorium.layers.conv import ConvStem
from sensorium.models.encoders import IMAGENET_MEAN, IMAGENET_STD, load_pretrained
from sensorium.recipes.doppler.reader import to_signed


class _Frozen(nn.Module):
    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: no dropout, no statistics updates, ever


class RandomConvFeatures(_Frozen):
    """(B, C, H, W) in [0, 1] -> (B, widths[-1], H / 2^len(widths), W / 2^len(widths)), with fixed
    random weights."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128), seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same features in every run, whatever the global seed
            self.stem = ConvStem(in_channels, tuple(widths))
        self.out_dim = widths[-1]
        self.freeze()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(to_signed(x))


class Dinov2PatchFeatures(_Frozen):
    """(B, C, H, W) in [0, 1] -> (B, hidden, input_size / patch, input_size / patch) DINOv2 patch tokens."""

    def __init__(self, local_dir: str | Path, input_size: int = 224):
        super().__init__()
        self.backbone = load_pretrained(local_dir)
        config = self.backbone.config
        self.patch = int(config.patch_size)
        if input_size % self.patch:
            raise ValueError(f"input_size {input_size} is not a multiple of the patch size {self.patch}")
        self.input_size = input_size
        self.prefix = 1 + int(getattr(config, "num_register_tokens", 0))  # class token (+ registers) first
        self.out_dim = int(config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> the three channels DINOv2 was trained on
        x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic",
                                      align_corners=False)
        pixels = (x - self.mean) / self.std
        tokens = self.backbone(pixel_values=pixels).last_hidden_state  # (B, prefix + g*g, D)
        patches = tokens[:, self.prefix:]
        g = self.input_size // self.patch
        return patches.transpose(1, 2).reshape(x.shape[0], -1, g, g)  # (B, D, g, g)


def build_foundation(in_channels: int, pretrained: str | None, input_size: int,
                     random_widths: tuple[int, ...], seed: int) -> _Frozen:
    if pretrained is not None:
        return Dinov2PatchFeatures(pretrained, input_size)
    return RandomConvFeatures(in_channels, random_widths, seed)
