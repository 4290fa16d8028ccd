"""Hinge GAN terms of a patch discriminator (LDM's autoencoder; Lim & Ye 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))): zero once reals score >= 1 and fakes <= -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """-mean D(x_hat): the generator raises the discriminator's score of its reconstructions."""
    return -logits_fake.mean()
