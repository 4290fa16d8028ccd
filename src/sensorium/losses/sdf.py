"""SDF losses for neural implicit shapes with one SDF channel per structure (class), as a
multi-class VecSet autoencoder (`sensorium.models.vecset`) predicts them.

Conventions: SDF tensors are (..., C) with one channel per structure, **negative inside** (the
convention of `sensorium.data.sdf`), in the normalised units of the data. Every term takes named
inputs; nothing is picked by position.

The combination follows VecSetX (`vecset/engines/engine_ae.py`): L1 on volume points + 10 x L1 on
near-surface points + 1 x surface term + 0.001 x eikonal (+ a KL weight for a KL bottleneck, as in
3DShape2VecSet). `SdfLoss` holds the weights and returns every weighted term by name, so the
doctor can check each term's share (a term under 1% of the total can leave the IoU at 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sensorium.losses.kl import gaussian_kl


def sdf_l1_loss(pred: torch.Tensor, target: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """Mean over structures of each structure's mean absolute SDF error.

    Args:
        pred, target: (..., C) predicted and true SDF at the same points (volume or near-surface).
        clamp: truncation distance delta (DeepSDF, Park et al. CVPR 2019): both sides are clamped to
            [-delta, delta] first, so a channel whose point lies beyond delta from its surface only
            has to get the sign (and at least delta) right. The capacity then goes to the surfaces,
            which is what the inside/outside metrics measure. None: plain L1 (VecSetX).

    Every channel has the same number of points here, so this equals the mean over all entries;
    it is written per class to say what it weighs: each structure counts the same, however small.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if clamp is not None:
        if clamp <= 0:
            raise ValueError(f"clamp must be positive, got {clamp}")
        pred, target = pred.clamp(-clamp, clamp), target.clamp(-clamp, clamp)
    per_class = (pred - target).abs().flatten(0, -2).mean(dim=0)  # (C,)
    return per_class.mean()


def surface_loss(pred_at_surface: torch.Tensor, surface_labels: torch.Tensor) -> torch.Tensor:
    """Mean |SDF| of each surface point in its own structure's channel: a structure's surface is
    its zero level set.

    Args:
        pred_at_surface: (..., N, C) predicted SDF at surface points.
        surface_labels: (..., N) long, the structure each point was sampled from.

    The channel is selected by the point's label (gather); other structures' channels at that
    point are ignored (they are not zero there: in a heart, a point of the LV wall lies inside the
    myocardium's neighbourhood, outside the RV, ...).
    """
    if pred_at_surface.shape[:-1] != surface_labels.shape:
        raise ValueError(f"pred_at_surface {tuple(pred_at_surface.shape)} does not match surface_labels "
                         f"{tuple(surface_labels.shape)} (expected (..., N, C) and (..., N))")
    own = pred_at_surface.gather(-1, surface_labels.long()[..., None]).squeeze(-1)  # (..., N)
    return own.abs().mean()


def eikonal_loss(gradients: torch.Tensor) -> torch.Tensor:
    """Mean of (|grad SDF| - 1)^2: a signed distance has unit gradient almost everywhere
    (Gropp et al., Implicit Geometric Regularization, ICML 2020).

    Args:
        gradients: (..., 3) spatial gradients of the predicted SDF (e.g. from
            `VecSetAutoEncoder.sdf_with_gradient`, created with create_graph=True so the loss trains).
    """
    if gradients.shape[-1] != 3:
        raise ValueError(f"gradients must end in 3 (xyz), got {tuple(gradients.shape)}")
    return (gradients.norm(dim=-1) - 1.0).square().mean()


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per latent channel, averaged over all entries
    (3DShape2VecSet's `DiagonalGaussianDistribution.kl`, mean-reduced).

    Args:
        mean, logvar: (B, M, D) posterior parameters of the KL bottleneck.
    """
    return gaussian_kl(mean, logvar).mean()


class SdfLossOutput(NamedTuple):
    total: torch.Tensor
    """The weighted sum: the loss to optimise."""
    terms: dict[str, torch.Tensor]
    """Weighted terms by name ("volume", "near", "surface", "eikonal", "kl"): those computed with
    a non-zero weight. They sum to `total`; a task returns them as its loss terms."""
    raw: dict[str, torch.Tensor]
    """The same terms before weighting, for logging."""


class SdfLoss(nn.Module):
    """VecSetX's SDF objective for C structures (see the module docstring).

    Args:
        volume: weight of the L1 term on uniform volume points.
        near: weight of the L1 term on near-surface points.
        surface: weight of the surface term (own channel at 0 on each structure's surface).
        eikonal: weight of (|grad| - 1)^2; needs gradients from a double-backward-capable decode.
        kl: weight of the KL term of a KL bottleneck (3DShape2VecSet uses 1e-3).
        clamp: truncation distance of the volume and near L1 terms (see `sdf_l1_loss`); None: none.

    Example:
        >>> loss = SdfLoss()
        >>> out = loss(vol_pred=v, vol_sdf=v_true, near_pred=n, near_sdf=n_true,
        ...            surface_pred=s, surface_labels=labels, gradients=g)
        >>> out.total.backward(); out.terms["near"]
    """

    def __init__(self, volume: float = 1.0, near: float = 10.0, surface: float = 1.0, eikonal: float = 0.001,
                 kl: float = 0.0, clamp: float | None = None):
        super().__init__()
        if clamp is not None and clamp <= 0:
            raise ValueError(f"clamp must be positive (or None), got {clamp}")
        self.clamp = clamp
        weights = {"volume": volume, "near": near, "surface": surface, "eikonal": eikonal, "kl": kl}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"weight {name} must be >= 0, got {value}")
        if volume == near == surface == 0:
            raise ValueError("at least one of the volume, near and surface weights must be positive")
        self.weights = weights

    def forward(self, *, vol_pred: torch.Tensor, vol_sdf: torch.Tensor, near_pred: torch.Tensor,
                near_sdf: torch.Tensor, surface_pred: torch.Tensor | None = None,
                surface_labels: torch.Tensor | None = None, gradients: torch.Tensor | None = None,
                kl_mean: torch.Tensor | None = None, kl_logvar: torch.Tensor | None = None) -> SdfLossOutput:
        """Shapes: vol_pred / vol_sdf (B, Nv, C); near_pred / near_sdf (B, Nn, C); surface_pred
        (B, Ns, C) with surface_labels (B, Ns); gradients (..., 3); kl_mean / kl_logvar (B, M, D).
        A term whose weight is non-zero needs its inputs; a term with weight 0 is skipped."""
        raw: dict[str, torch.Tensor] = {}
        w = self.weights
        if w["volume"]:
            raw["volume"] = sdf_l1_loss(vol_pred, vol_sdf, self.clamp)
        if w["near"]:
            raw["near"] = sdf_l1_loss(near_pred, near_sdf, self.clamp)
        if w["surface"]:
            if surface_pred is None or surface_labels is None:
                raise ValueError("surface weight > 0 needs surface_pred and surface_labels")
            raw["surface"] = surface_loss(surface_pred, surface_labels)
        if w["eikonal"]:
            if gradients is None:
                raise ValueError("eikonal weight > 0 needs gradients (set eikonal=0 to train without)")
            raw["eikonal"] = eikonal_loss(gradients)
        if w["kl"]:
            if kl_mean is None or kl_logvar is None:
                raise ValueError("kl weight > 0 needs kl_mean and kl_logvar (a model with kl_dim)")
            raw["kl"] = kl_loss(kl_mean, kl_logvar)
        terms = {name: w[name] * value for name, value in raw.items()}
        total = torch.stack(list(terms.values())).sum()
        return SdfLossOutput(total, terms, raw)
