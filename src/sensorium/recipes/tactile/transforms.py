"""Batch augmentation of tactile windows (kornia), on the batch's device: one draw per sequence,
applied to all of its frames, then normalisation by mean/std in every stage."""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from sensorium.models.encoders import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class AugmentConfig:
    """Batch augmentation (kornia), identical across the four frames of a window; inputs are
    normalised by `mean`/`std` in every stage."""

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    hflip: float = 0.5
    vflip: float = 0.0
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.05)
    jitter_p: float = 0.8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class TactileAugment(nn.Module):
    """Batch augmentation of tactile windows with kornia, identical across the frames of a sequence.

    forward(frames): (B, T, 3, S, S) or (B, 3, S, S) in [0, 1] -> same shape, normalised by mean/std.
    In training mode: random resized crop (back to S), horizontal and vertical flips, colour jitter,
    each drawn once per sequence and applied to all of its frames (the parameters are sampled for B
    images and reused for every frame: a per-frame crop or jitter would fake motion). In eval mode:
    normalisation only. `denormalize` inverts the normalisation (for pictures).
    """

    def __init__(self, image_size: int, crop_scale: tuple[float, float] = (0.6, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, vflip: float = 0.0,
                 jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.05), jitter_p: float = 0.8,
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD):
        super().__init__()
        steps = [K.RandomResizedCrop((image_size, image_size), scale=crop_scale, ratio=crop_ratio)]
        if hflip > 0:
            steps.append(K.RandomHorizontalFlip(p=hflip))
        if vflip > 0:
            steps.append(K.RandomVerticalFlip(p=vflip))
        if jitter_p > 0 and any(jitter):
            steps.append(K.ColorJitter(*jitter, p=jitter_p))
        self.random = K.AugmentationSequential(*steps)
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.training:
            sequence = frames if frames.dim() == 5 else frames[:, None]  # (B, T, 3, S, S)
            params = self.random.forward_parameters(sequence[:, 0].shape)  # one draw per sequence
            out = torch.stack([self.random(sequence[:, t], params=params)  # (B, 3, S, S) each
                               for t in range(sequence.shape[1])], dim=1)  # (B, T, 3, S, S)
            frames = out if frames.dim() == 5 else out[:, 0]
        return self.normalize(frames)
