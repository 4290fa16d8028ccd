"""Masked-patch reconstruction loss (MAE, He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners", arXiv:2111.06377).

Inputs are patch tensors [B, L, P] (see `sensorium.layers.patch_embed.patchify`) and a mask [B, L]
with 1 = masked (the patches the loss scores). The loss is the mean over scored patches of the
per-patch mean squared error. With `norm_pix=True` each TARGET patch is standardised by its own
mean and variance first (MAE's "normalized pixels" target, which sharpens reconstructions); the
prediction is then in that per-patch standardised space.

Frame prediction scores every patch of the predicted frame: pass `torch.ones(B, L)` as the mask.

    >>> pred, target = torch.randn(2, 16, 192), torch.randn(2, 16, 192)
    >>> mask = (torch.rand(2, 16) < 0.75).float()
    >>> loss = mae_loss(pred, target, mask)
"""

from __future__ import annotations

import torch
from torch import nn


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardise each patch (last dim) by its own mean and (unbiased, as in MAE) variance."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps).sqrt()


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
             eps: float = 1e-6) -> torch.Tensor:
    """Mean over masked patches of the per-patch MSE.

    pred, target: [B, L, P]; mask: [B, L], 1 = masked (scored), 0 = visible (ignored); float or bool.
    The target is a constant (detached): gradients flow into `pred` only. Returns a scalar; a mask
    with no masked patch gives 0 (there is nothing to score), not NaN.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must be pred's shape without the patch dim, "
                         f"{tuple(pred.shape[:-1])}")
    # Computed in fp32: under bf16/fp16 autocast a per-patch variance of near-flat patches loses
    # most of its digits, and norm_pix divides by it.
    pred, target, mask = pred.float(), target.detach().float(), mask.float()
    if norm_pix:
        target = normalize_patches(target, eps)
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MaeLoss(nn.Module):
    """`mae_loss` as a module: `MaeLoss(norm_pix=True)(pred, target, mask)`; see the module docstring."""

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6):
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive (it keeps flat patches finite), got {eps}")
        self.norm_pix = norm_pix
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mae_loss(pred, target, mask, self.norm_pix, self.eps)

    def extra_repr(self) -> str:
        return f"norm_pix={self.norm_pix}, eps={self.eps}"
