"""Contrastive losses: supervised contrastive (SupCon) and symmetric InfoNCE (CLIP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supcon_loss(features: torch.Tensor, labels: torch.Tensor | None = None, temperature: float = 0.07,
                base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, "SupCon", eq. 2 / L_out).

    features: (B, V, D) L2-normalised embeddings, V views per sample.
    labels:   (B,) integer classes; None gives the SimCLR loss (the positives of an anchor are the
              other views of its own sample).
    Every one of the B*V embeddings is an anchor; its positives are all other embeddings with the
    same label, its denominator all other embeddings. Anchors without any positive (a class seen
    once with V = 1) are excluded from the mean instead of producing NaN; if no anchor has a
    positive the loss is 0 (still connected to the graph).

    >>> f = F.normalize(torch.randn(8, 2, 16), dim=-1)
    >>> supcon_loss(f, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
    torch.Size([])
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (B, V, D), got shape {tuple(features.shape)}")
    with torch.autocast(features.device.type, enabled=False):
        # fp32 even under mixed precision: at temperature 0.07 bf16 logits (8 bits of mantissa)
        # lose the small similarity differences the loss is made of.
        return _supcon(features.to(torch.promote_types(features.dtype, torch.float32)), labels, temperature,
                       base_temperature)


def _supcon(features: torch.Tensor, labels: torch.Tensor | None, temperature: float,
            base_temperature: float) -> torch.Tensor:
    B, V, D = features.shape
    if labels is None:
        labels = torch.arange(B, device=features.device)
    elif labels.shape != (B,):
        raise ValueError(f"labels must be ({B},), got shape {tuple(labels.shape)}")
    if B * V < 2:  # nothing to contrast (e.g. no sample of the batch has a modality)
        return features.sum() * 0.0
    contrast = features.transpose(0, 1).reshape(B * V, D)  # (V*B, D), view-major
    anchor_labels = labels.repeat(V)  # (V*B,)
    logits = contrast @ contrast.T / temperature  # (V*B, V*B)
    self_mask = torch.eye(B * V, dtype=torch.bool, device=features.device)
    # Remove the anchor itself from its denominator; subtracting the row max keeps exp() finite.
    logits = logits.masked_fill(self_mask, float("-inf"))
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (V*B, V*B)
    positives = (anchor_labels[:, None] == anchor_labels[None, :]) & ~self_mask
    num_positives = positives.sum(dim=1)  # (V*B,)
    has_positive = num_positives > 0
    if not bool(has_positive.any()):
        return features.sum() * 0.0
    mean_log_prob_pos = (log_prob.masked_fill(~positives, 0.0)).sum(dim=1) / num_positives.clamp(min=1)
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss[has_positive].mean()


class SupConLoss(nn.Module):
    """Module form of `supcon_loss`; settings are checked once here.

    >>> loss_fn = SupConLoss(temperature=0.1)
    >>> loss_fn(F.normalize(torch.randn(4, 1, 8), dim=-1), torch.tensor([0, 0, 1, 1])).ndim
    0
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07):
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError("temperatures must be positive")
        self.temperature = temperature
        self.base_temperature = base_temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return supcon_loss(features, labels, self.temperature, self.base_temperature)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): row i of `a` (N, D) and row i of `b` (N, D)
    are a positive pair, every other row a negative. Inputs should be L2-normalised. Returns the
    mean of the a->b and b->a cross-entropies."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    with torch.autocast(a.device.type, enabled=False):  # fp32 logits, as in supcon_loss
        logits = a.float() @ b.float().T / temperature  # (N, N)
        targets = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
