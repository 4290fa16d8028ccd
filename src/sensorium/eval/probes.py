"""Frozen-feature probes: how much of a label a fixed encoder's features carry.

Two protocols on the same (bank, query) split, both fitted on the bank only:

- weighted k-NN (`sensorium.eval.knn.knn_predict`: cosine similarity, votes exp(sim / T)), the
  DINO protocol; no training, so it measures the geometry of the features as they are;
- a linear probe: multinomial logistic regression (scikit-learn, L-BFGS) on features
  standardised by the bank's per-dimension mean and std, MAE's linear-probing recipe (a
  BatchNorm without affine before the linear head) with a convex solver instead of SGD.

A caller may first standardise the features for both (`standardize`): per dimension with the
bank's statistics, or per group (e.g. per sensor: the statistics of each sensor's bank rows applied
to that sensor's queries, a BatchNorm with per-domain statistics as in AdaBN, Li et al. 2016). When
the features separate the groups completely, cosine similarity inside a group is dominated by the
group's mean vector; per-group statistics remove it.

Samples with label -1 (unknown) are left out of both sides. Compare an encoder with itself at
initialisation under the same protocol, pooling and split; that difference is the point.

    >>> report = probe_report(bank_x, bank_y, query_x, query_y, k=20, temperature=0.07)
    >>> report["knn_accuracy"], report["linear_probe_accuracy"]
"""

from __future__ import annotations

import numpy as np
import torch

from sensorium.eval.knn import knn_predict


def _labelled(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = labels >= 0
    return features[keep].float(), labels[keep].long()


def standardize(bank_x: torch.Tensor, query_x: torch.Tensor, bank_groups: torch.Tensor | None = None,
                query_groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank (N_b, D) and query (N_q, D) features with every dimension standardised by the bank's
    mean and std; per group when `bank_groups` (N_b,) and `query_groups` (N_q,) are given (each
    query by its own group's bank statistics). Nothing of the queries is fitted."""
    bank_x, query_x = bank_x.float(), query_x.float()
    if bank_groups is None or query_groups is None:
        mean, std = bank_x.mean(0), bank_x.std(0).clamp_min(1e-6)
        return (bank_x - mean) / std, (query_x - mean) / std
    bank_out, query_out = torch.empty_like(bank_x), torch.empty_like(query_x)
    for group in torch.unique(torch.cat([bank_groups, query_groups])).tolist():
        in_bank, in_query = bank_groups == group, query_groups == group
        if int(in_bank.sum()) < 2:
            raise ValueError(f"group {group}: {int(in_bank.sum())} bank rows; per-group statistics need at least 2")
        bank_out[in_bank], query_out[in_query] = standardize(bank_x[in_bank], query_x[in_query])
    return bank_out, query_out


def knn_accuracy(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor, query_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Accuracy of weighted k-NN of the query rows (N_q, D) against the bank (N_b, D)."""
    bank_x, bank_y = _labelled(bank_x, bank_y)
    query_x, query_y = _labelled(query_x, query_y)
    if len(query_y) == 0:
        raise ValueError("k-NN accuracy needs labelled query samples (labels >= 0)")
    num_classes = num_classes or int(max(bank_y.max(), query_y.max())) + 1
    pred = knn_predict(bank_x, bank_y, query_x, k, temperature, num_classes)
    return float((pred == query_y).float().mean())


def linear_probe_accuracy(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor,
                          query_y: torch.Tensor, c: float = 1.0, max_iter: int = 2000) -> float:
    """Accuracy on the query rows of a logistic regression fitted on the bank rows, after
    standardising every dimension by the bank's mean and std. `c`: inverse L2 strength."""
    from sklearn.linear_model import LogisticRegression

    bank_x, bank_y = _labelled(bank_x, bank_y)
    query_x, query_y = _labelled(query_x, query_y)
    if len(query_y) == 0 or len(torch.unique(bank_y)) < 2:
        raise ValueError("a linear probe needs labelled queries and at least two classes in the bank")
    mean, std = bank_x.mean(0), bank_x.std(0).clamp_min(1e-6)
    x_fit = ((bank_x - mean) / std).numpy().astype(np.float64)
    x_eval = ((query_x - mean) / std).numpy().astype(np.float64)
    probe = LogisticRegression(C=c, max_iter=max_iter)
    probe.fit(x_fit, bank_y.numpy())
    return float((probe.predict(x_eval) == query_y.numpy()).mean())


def probe_report(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor, query_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, c: float = 1.0,
                 num_classes: int | None = None) -> dict[str, float | int]:
    """k-NN and linear-probe accuracy plus the sizes they were measured on (JSON-able)."""
    return {
        "knn_accuracy": knn_accuracy(bank_x, bank_y, query_x, query_y, k, temperature, num_classes),
        "linear_probe_accuracy": linear_probe_accuracy(bank_x, bank_y, query_x, query_y, c),
        "bank_size": int((bank_y >= 0).sum()),
        "query_size": int((query_y >= 0).sum()),
        "chance": 1.0 / float(num_classes or int(max(bank_y.max(), query_y.max())) + 1),
    }
