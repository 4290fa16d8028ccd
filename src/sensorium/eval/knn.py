"""k-NN classification of embeddings (the DINO protocol by default) and its classification report.

Options beside the DINO defaults (weighted votes, cosine similarity): uniform votes (a plain
majority, as scikit-learn's `KNeighborsClassifier`), euclidean distance, and several k measured
from one neighbour search (`knn_predict_ks`).

Ties: a vote tie (two classes with the same total) goes to the tied class whose nearest neighbour
is nearest, i.e. the one a smaller k would have chosen; neighbours at equal distance keep the
order `torch.topk` gives them (deterministic for the same inputs and device).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Votes = Literal["weighted", "uniform"]
Metric = Literal["cosine", "euclidean"]


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                chunk_size: int = 4096, votes: Votes = "weighted", metric: Metric = "cosine") -> torch.LongTensor:
    """Predict a class for each row of `test_features` (N_test, D) from its k nearest rows of
    `train_features` (N_train, D) by cosine similarity, each neighbour voting for its label with
    weight exp(similarity / temperature) (Caron et al. 2021, DINO, following Wu et al. 2018).

    votes: "weighted" (above) or "uniform" (one vote per neighbour: a majority vote; `temperature`
        is then unused).
    metric: "cosine" (features L2-normalised here, so raw embeddings may be passed) or "euclidean"
        (distance between the features as given; a weighted vote is then exp(-distance /
        temperature)). On L2-normalised features both rank neighbours alike (|a - b|^2 = 2 - 2 cos);
        they differ on unnormalised features and in the weighted votes.

    Safe for small sets: k is clipped to N_train, and an empty test set gives an empty result.
    Test rows are processed in chunks of `chunk_size` to bound memory at (chunk_size, N_train).
    Vote ties go to the tied class with the nearest neighbour (see the module docstring).
    """
    return knn_predict_ks(train_features, train_labels, test_features, [k], temperature, num_classes, chunk_size,
                          votes, metric)[k]


@torch.no_grad()
def knn_predict_ks(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   ks: Sequence[int], temperature: float = 0.07, num_classes: int | None = None,
                   chunk_size: int = 4096, votes: Votes = "weighted", metric: Metric = "cosine",
                   ) -> dict[int, torch.LongTensor]:
    """`knn_predict` for every k of `ks` from one neighbour search: the max(ks) nearest rows are
    found once and each k votes with the first k of them. Returns {k: LongTensor (N_test,)}, keyed
    by the k asked for (each is clipped to N_train); equal to separate `knn_predict` calls."""
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError("features must be 2-D (N, D)")
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(f"{train_features.shape[0]} train features but {train_labels.shape[0]} labels")
    if train_features.shape[0] == 0:
        raise ValueError("k-NN needs at least one training sample")
    if not ks or min(ks) < 1:
        raise ValueError(f"k-NN needs k >= 1, got ks={list(ks)}")
    if votes not in ("weighted", "uniform"):
        raise ValueError(f"unknown votes {votes!r}; one of weighted, uniform")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; one of cosine, euclidean")
    if test_features.shape[0] == 0:
        return {k: torch.empty(0, dtype=torch.long, device=test_features.device) for k in ks}
    num_classes = num_classes or int(train_labels.max()) + 1
    n_train = train_features.shape[0]
    search = min(max(ks), n_train)
    train, test = train_features.float(), test_features.float()
    if metric == "cosine":
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    train_labels = train_labels.long().to(train.device)
    predictions: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for chunk in test.split(chunk_size):
        if metric == "cosine":
            score = chunk @ train.T  # (n, N_train): similarity, higher is nearer
        else:
            score = -torch.cdist(chunk, train)  # (n, N_train): minus the distance
        top_score, top_idx = score.topk(search, dim=1)  # (n, K), nearest first
        if votes == "uniform":
            weights = torch.ones_like(top_score)
        elif metric == "cosine":
            weights = (top_score / temperature).exp()  # (n, K); similarity <= 1 keeps exp in range
        else:
            # Distances are unbounded: shift by the nearest one (a common factor per row, so the
            # vote is unchanged) so exp(-d / T) cannot underflow to 0 for every neighbour.
            weights = ((top_score - top_score[:, :1]) / temperature).exp()  # (n, K)
        neighbour_labels = train_labels[top_idx]  # (n, K)
        for k in ks:
            predictions[k].append(_vote(neighbour_labels[:, :min(k, n_train)], weights[:, :min(k, n_train)],
                                        num_classes))
    return {k: torch.cat(parts) for k, parts in predictions.items()}


def _vote(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels, weights (n, k), neighbours nearest first -> the class with the largest total vote;
    a tie goes to the tied class whose first neighbour comes first."""
    n, k = labels.shape
    totals = torch.zeros(n, num_classes, device=labels.device).scatter_add_(1, labels, weights)  # (n, C)
    rank = torch.arange(k, device=labels.device).expand(n, k)  # (n, k)
    first = torch.full((n, num_classes), k, device=labels.device).scatter_reduce_(1, labels, rank, "amin")  # (n, C)
    tied = totals == totals.max(dim=1, keepdim=True).values  # (n, C)
    return first.masked_fill(~tied, k + 1).argmin(dim=1)


def classification_report(true: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor,
                          class_names: list[str]) -> dict:
    """Accuracy, macro and weighted precision/recall/F1, a per-class report and the confusion
    matrix (rows = true class, columns = predicted), as plain JSON-able values."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    true = np.asarray(true.cpu() if isinstance(true, torch.Tensor) else true)
    pred = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred)
    labels = list(range(len(class_names)))
    report: dict = {"num_samples": int(len(true)),
                    "accuracy": float((true == pred).mean()) if len(true) else 0.0}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(true, pred, labels=labels, average=average, zero_division=0)
        report[f"precision_{average}"], report[f"recall_{average}"], report[f"f1_{average}"] = float(p), float(r), float(f)
    p, r, f, support = precision_recall_fscore_support(true, pred, labels=labels, average=None, zero_division=0)
    report["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    report["class_names"] = list(class_names)
    report["confusion_matrix"] = confusion_matrix(true, pred, labels=labels).tolist()
    return report
