"""Metrics of conditional generators, measured in the feature space of a classifier trained on real
data (FID's recipe with a task classifier instead of Inception; the classifier-based scores of
Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models").

- `frechet_distance(a, b)`: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians
  fitted to two feature sets (Heusel et al. 2017). It is biased upwards for small samples, so compare
  sets of equal size only, and read it against the distance between two disjoint real sets of that
  size (the floor a perfect generator would reach).
- `class_accuracy(pred, labels)`: overall and per-class accuracy of a classifier's predictions, e.g.
  on generated samples of each class (conditioning fidelity) or on real test data after training on
  generated samples only (CAS).
"""

from __future__ import annotations

import numpy as np
import torch


def gaussian_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and covariance (D, D), in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, D) and b (M, D); >= 0."""
    from scipy.linalg import sqrtm

    mu_a, cov_a = gaussian_statistics(a)
    mu_b, cov_b = gaussian_statistics(b)
    root = sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: regularise, as the FID reference code does
        offset = np.eye(len(cov_a)) * 1e-6
        root = sqrtm((cov_a + offset) @ (cov_b + offset))
    trace = np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root))
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + trace))


def class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """{"accuracy": overall, "per_class": [accuracy of class c or None when absent]}."""
    pred, labels = torch.as_tensor(pred).long(), torch.as_tensor(labels).long()
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} must be equal "
                         "1-D shapes")
    num_classes = num_classes or int(labels.max()) + 1
    correct = (pred == labels).double()
    per_class = [float(correct[labels == c].mean()) if bool((labels == c).any()) else None
                 for c in range(num_classes)]
    return {"accuracy": float(correct.mean()) if len(correct) else float("nan"), "per_class": per_class}
