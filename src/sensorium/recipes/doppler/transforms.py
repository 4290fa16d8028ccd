"""The "classic" augmentation of spectrogram classifiers, against which generated data is measured:
time shifts, time crops, SpecAugment masks and mixup, on a batch, vectorised over samples.

- shift: a circular shift along time by a random offset (a walk has no preferred start);
- crop: a random time window of `crop`..1 of the width, stretched back to the full width (what
  a RandomResizedCrop does along time; mild, since stretching time changes the apparent cadence);
- SpecAugment (Park et al. 2019): one time band and one Doppler band per image set to the image's
  floor (its minimum, i.e. "no return"), of random width up to `time_mask` / `freq_mask`;
- mixup (Zhang et al. 2018): convex combinations of image pairs and of their one-hot labels,
  weight ~ Beta(mixup, mixup).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ClassicAugmentConfig:
    shift: bool = True
    crop: float = 0.85
    """Smallest time-crop fraction; 1 disables cropping."""
    time_mask: int = 8
    """Widest SpecAugment time band (frames); 0 disables."""
    freq_mask: int = 6
    """Widest SpecAugment Doppler band (rows); 0 disables."""
    mixup: float = 0.2
    """Beta(a, a) parameter of mixup; 0 disables."""


def _band(batch: int, length: int, max_width: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, length) bool: one random band of width 0..max_width per sample."""
    width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
    start = (torch.rand(batch, 1, generator=generator) * (length - width + 1)).floor()
    position = torch.arange(length)[None, :]
    return (position >= start) & (position < start + width)


def classic_augment(images: torch.Tensor, targets: torch.Tensor, config: ClassicAugmentConfig | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, C, H, W) in [0, 1] (time along W), targets (B, K) label distributions ->
    augmented images and targets (mixup mixes the targets as it mixes the images)."""
    c = config or ClassicAugmentConfig()
    B, _, H, W = images.shape
    x = images
    if c.shift:
        offset = torch.randint(0, W, (B, 1), generator=generator)
        index = (torch.arange(W)[None, :] + offset) % W  # (B, W) source column of each column
        x = x.gather(3, index[:, None, None, :].expand(-1, x.shape[1], H, -1))
    if c.crop < 1.0:
        scale = c.crop + (1 - c.crop) * torch.rand(B, generator=generator)  # window width / W
        centre = (1 - scale) * (2 * torch.rand(B, generator=generator) - 1)  # keeps the window inside
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1] = scale, centre, 1.0  # x' = scale x + centre, y' = y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    if c.time_mask:
        x = torch.where(_band(B, W, c.time_mask, generator)[:, None, None, :], floor, x)
    if c.freq_mask:
        x = torch.where(_band(B, H, c.freq_mask, generator)[:, None, :, None], floor, x)
    if c.mixup > 0:
        weight = torch.distributions.Beta(c.mixup, c.mixup).sample((B,))
        partner = torch.randperm(B, generator=generator)
        x = weight.view(B, 1, 1, 1) * x + (1 - weight.view(B, 1, 1, 1)) * x[partner]
        targets = weight[:, None] * targets + (1 - weight[:, None]) * targets[partner]
    return x, targets
