"""KL divergence of a diagonal Gaussian posterior from the standard normal prior (the KL term of a
VAE, Kingma & Welling 2014): KL(N(mean, exp(logvar)) || N(0, I)), element by element."""

from __future__ import annotations

import torch


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise 0.5 (mean^2 + exp(logvar) - 1 - logvar); same shape as the inputs."""
    if mean.shape != logvar.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def kl_per_sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, ...) posterior parameters -> (B,) KL summed over each sample's latent entries, the
    reduction of LDM's autoencoder, in which its KL weight (1e-6) is stated."""
    return gaussian_kl(mean, logvar).flatten(1).sum(dim=1)
