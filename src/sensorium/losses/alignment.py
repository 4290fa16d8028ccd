"""VA-VAE's vision-foundation alignment loss (Yao et al., "Reconstruction vs. Generation: Taming
Optimization Dilemma in Latent Diffusion Models", CVPR 2025; LightningDiT's
`vavae/ldm/modules/losses/contperceptual.py`), and the adaptive weight it is trained with.

The latent z (projected by a learned 1x1 convolution to the width of a frozen encoder's patch
features f, on the same h x w grid) is pulled towards f by two margin terms:

- marginal cosine similarity: mean over positions of relu(1 - m_cos - cos(z_i, f_i));
- marginal distance matrix similarity: mean over pairs of positions of one image of
  relu(|cos(z_i, z_j) - cos(f_i, f_j)| - m_dist).

A position whose cosine already exceeds 1 - m_cos, or a pair whose similarities already agree within
m_dist, costs nothing: the latent only has to be roughly aligned, and keeps the freedom to encode
what reconstruction needs (VA-VAE: m_cos 0.5, m_dist 0.25, both terms weight 1).

The adaptive weight balances the term against reconstruction by their gradient norms at the encoder's
last layer: w = vf_weight * ||grad nll|| / (||grad vf|| + 1e-4), detached (VA-VAE: vf_weight 0.1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class VFTerms(NamedTuple):
    total: torch.Tensor
    """distmat_weight * distmat + cos_weight * cos."""
    cos: torch.Tensor
    distmat: torch.Tensor


def vf_loss(z: torch.Tensor, features: torch.Tensor, cos_margin: float = 0.5, distmat_margin: float = 0.25,
            cos_weight: float = 1.0, distmat_weight: float = 1.0) -> VFTerms:
    """The two margin terms (see the module docstring).

    Args:
        z: (B, D, h, w) projected latent; features: (B, D, h, w) frozen patch features (treated
            as constants: no gradient reaches them).
    """
    if z.shape != features.shape:
        raise ValueError(f"projected latent {tuple(z.shape)} and features {tuple(features.shape)} differ; "
                         "resize the features to the latent grid and project the latent to their width")
    features = features.detach()
    z_flat = F.normalize(z.float().flatten(2), dim=1)  # (B, D, h*w), unit vectors per position
    f_flat = F.normalize(features.float().flatten(2), dim=1)
    z_sim = torch.einsum("bdi,bdj->bij", z_flat, z_flat)  # (B, h*w, h*w) cosine between positions
    f_sim = torch.einsum("bdi,bdj->bij", f_flat, f_flat)
    distmat = F.relu((z_sim - f_sim).abs() - distmat_margin).mean()
    cosine = (z_flat * f_flat).sum(dim=1)  # (B, h*w)
    cos = F.relu(1.0 - cos_margin - cosine).mean()
    return VFTerms(distmat_weight * distmat + cos_weight * cos, cos, distmat)


def adaptive_weight(nll: torch.Tensor, vf: torch.Tensor, last_layer: torch.Tensor, scale: float = 0.1,
                    max_weight: float = 1e8) -> torch.Tensor:
    """scale * ||d nll / d last_layer|| / (||d vf / d last_layer|| + 1e-4), clamped to [0, max_weight]
    and detached. Both losses must depend on `last_layer` (their graphs are kept for the backward)."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    vf_grad = torch.autograd.grad(vf, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (vf_grad.norm() + 1e-4)
    return scale * weight.clamp(0.0, max_weight).detach()


class VFLoss(nn.Module):
    """`vf_loss` with its margins and weights checked once.

    Example:
        >>> vf = VFLoss()
        >>> terms = vf(projection(z), frozen_features)
        >>> loss = rec + adaptive_weight(rec, terms.total, encoder_last_layer) * terms.total
    """

    def __init__(self, cos_margin: float = 0.5, distmat_margin: float = 0.25, cos_weight: float = 1.0,
                 distmat_weight: float = 1.0):
        super().__init__()
        if not 0.0 <= cos_margin < 2.0 or not 0.0 <= distmat_margin < 2.0:
            raise ValueError(f"margins must be in [0, 2): cosine ranges over [-1, 1] (got {cos_margin}, "
                             f"{distmat_margin})")
        if cos_weight < 0 or distmat_weight < 0 or cos_weight == distmat_weight == 0:
            raise ValueError("the term weights must be non-negative and not both zero")
        self.cos_margin, self.distmat_margin = cos_margin, distmat_margin
        self.cos_weight, self.distmat_weight = cos_weight, distmat_weight

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> VFTerms:
        return vf_loss(z, features, self.cos_margin, self.distmat_margin, self.cos_weight,
                       self.distmat_weight)
