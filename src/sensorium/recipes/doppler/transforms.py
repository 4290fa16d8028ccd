"""The "classic" augmentation of spectrogram classifiers, against which generated data is measured:
time shifts, time crops, SpecAugment masks and mixup, on a batch, vectorised over samples.

- shift: a circular shift along time by a random offset (a walk has no preferred start);
- crop: a random time window of `crop`..1 of the width is kept and the rest set to the image's
  floor (a shorter observation). Not stretched back to the full width as RandomResizedCrop would:
  stretching time changes the cadence, which is part of who is walking;
- SpecAugment (Park et al. 2019): one time band and one Doppler band per image set to the image's
  floor (its minimum, i.e. "no return"), of random width up to `time_mask` / `freq_mask`;
- mixup (Zhang et al. 2018): convex combinations of image pairs and of their one-hot labels,
  weight ~ Beta(mixup, mixup).
All but the shift are applied to each image with probability `probability`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ClassicAugmentConfig:
    shift: bool = True
    """Circular time shift of every image."""
    crop: float = 0.75
    """Smallest time-crop fraction; 1 disables cropping."""
    time_mask: int = 6
    """Widest SpecAugment time band (frames); 0 disables."""
    freq_mask: int = 4
    """Widest SpecAugment Doppler band (rows); 0 disables."""
    mixup: float = 0.2
    """Beta(a, a) parameter of mixup; 0 disables."""
    probability: float = 0.5
    """Each of crop, the masks and mixup is applied to an image with this probability (a
    practitioner's usual setting: always-on masks and mixup slowed a 200-step low-data classifier
    down more than they regularised it)."""


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
    floor = x.amin(dim=(1, 2, 3), keepdim=True)

    def chosen() -> torch.Tensor:
        return torch.rand(B, 1, generator=generator) < c.probability  # (B, 1): which images get it

    if c.crop < 1.0:
        fraction = c.crop + (1 - c.crop) * torch.rand(B, 1, generator=generator)
        width = (fraction * W).round()  # (B, 1) kept frames
        start = (torch.rand(B, 1, generator=generator) * (W - width + 1)).floor()
        position = torch.arange(W)[None, :]
        cut = ~((position >= start) & (position < start + width)) & chosen()  # (B, W)
        x = torch.where(cut[:, None, None, :], floor, x)
    if c.time_mask:
        x = torch.where((_band(B, W, c.time_mask, generator) & chosen())[:, None, None, :], floor, x)
    if c.freq_mask:
        x = torch.where((_band(B, H, c.freq_mask, generator) & chosen())[:, None, :, None], floor, x)
    if c.mixup > 0:
        weight = torch.distributions.Beta(c.mixup, c.mixup).sample((B, 1))
        weight = torch.where(chosen(), weight, torch.ones_like(weight))  # (B, 1); 1: not mixed
        partner = torch.randperm(B, generator=generator)
        x = weight.view(B, 1, 1, 1) * x + (1 - weight.view(B, 1, 1, 1)) * x[partner]
        targets = weight * targets + (1 - weight) * targets[partner]
    return x, targets


def random_blur(images: torch.Tensor, max_sigma: float, generator: torch.Generator | None = None,
                radius: int = 4) -> torch.Tensor:
    """Each image (B, C, H, W) blurred by a Gaussian of its own sigma, uniform in [0, max_sigma]
    pixels (sigma near 0 leaves it as it is): a separable convolution, one kernel per image.

    Used for the evaluation's classifier, not as a "classic" augmentation: generated spectrograms are
    smoother than real ones (a VAE trained for minutes does not reproduce speckle or one-pixel lines),
    and a classifier trained on sharp images only mistakes sharpness for identity (on the demo data
    it labels real VAL images blurred by sigma = 1 px correctly 39% of the time, 98% unblurred)."""
    B, C, H, W = images.shape
    sigma = (max_sigma * torch.rand(B, generator=generator)).clamp_min(1e-3)  # (B,)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None, :] ** 2 / (2 * sigma[:, None] ** 2))  # (B, 2r+1)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, dim=0)  # (B*C, 2r+1)
    x = images.reshape(1, B * C, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=B * C)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=B * C)
    return x.reshape(B, C, H, W)
