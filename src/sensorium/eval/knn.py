"""k-NN classification of embeddings (the DINO protocol by default) and its classification report.

Options beside the DINO defaults (weighted votes, cosine similarity): uniform votes (a plain
majority, as scikit-learn's `KNeighborsClassifier`), euclidean distance, and several k measured
from one neighbour search (`knn_predict_ks`).

Vote shares (`knn_votes_ks`): each class's total vote divided by the total of all k votes, a
per-class score in [0, 1] that sums to 1 (the class probabilities of the k-NN: what AUROC and
calibration need, where the predicted class alone gives neither).

Ties: a vote tie (two classes with the same total) goes to the tied class whose nearest neighbour
is nearest, i.e. the one a smaller k would have chosen; neighbours at equal distance keep the
order `torch.topk` gives them (deterministic for the same inputs and device).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

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
    return {k: result.prediction for k, result in knn_votes_ks(
        train_features, train_labels, test_features, ks, temperature, num_classes, chunk_size, votes, metric).items()}


class KnnVotes(NamedTuple):
    prediction: torch.LongTensor
    """(N_test,) the predicted class, as `knn_predict` gives it."""
    shares: torch.Tensor
    """(N_test, C) float: each class's share of the k votes; rows sum to 1, and the predicted class
    holds the largest share (on a tie, one of the largest; up to rounding)."""


@torch.no_grad()
def knn_votes_ks(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 ks: Sequence[int], temperature: float = 0.07, num_classes: int | None = None,
                 chunk_size: int = 4096, votes: Votes = "weighted", metric: Metric = "cosine",
                 ) -> dict[int, KnnVotes]:
    """`knn_predict_ks` with the vote shares beside the predictions: {k: KnnVotes(prediction,
    shares)}. Same arguments, same search and same predictions; `shares` (N_test, C) are each
    class's total vote over the total of the k votes (weighted: exp(similarity / T) per
    neighbour; uniform: the fraction of the k neighbours with that label)."""
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
    num_classes = num_classes or int(train_labels.max()) + 1
    if test_features.shape[0] == 0:
        return {k: KnnVotes(torch.empty(0, dtype=torch.long, device=test_features.device),
                            torch.empty(0, num_classes, device=test_features.device)) for k in ks}
    n_train = train_features.shape[0]
    search = min(max(ks), n_train)
    train, test = train_features.float(), test_features.float()
    if metric == "cosine":
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    train_labels = train_labels.long().to(train.device)
    predictions: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    shares: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for chunk in test.split(chunk_size):
        if metric == "cosine":
            score = chunk @ train.T  # (n, N_train): similarity, higher is nearer
        else:
            score = -torch.cdist(chunk, train)  # (n, N_train): minus the distance
        top_score, top_idx = score.topk(search, dim=1)  # (n, K), nearest first
        if votes == "uniform":
            weights = relative = torch.ones_like(top_score)
        else:
            # Relative to the nearest neighbour's (a common factor per row, so the vote and its
            # shares are unchanged): the nearest weighs exp(0) = 1, so exp(-d / T) cannot underflow
            # to 0 for every neighbour, and no row of shares divides by 0.
            relative = ((top_score - top_score[:, :1]) / temperature).exp()  # (n, K)
            # Cosine predictions keep the unshifted DINO weights (similarity <= 1 keeps exp in range).
            weights = (top_score / temperature).exp() if metric == "cosine" else relative  # (n, K)
        neighbour_labels = train_labels[top_idx]  # (n, K)
        for k in ks:
            nearest = min(k, n_train)
            predictions[k].append(_vote(neighbour_labels[:, :nearest], weights[:, :nearest], num_classes))
            totals = _totals(neighbour_labels[:, :nearest], relative[:, :nearest], num_classes)  # (n, C)
            shares[k].append(totals / totals.sum(dim=1, keepdim=True))
    return {k: KnnVotes(torch.cat(predictions[k]), torch.cat(shares[k])) for k in ks}


def _totals(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels, weights (n, k) -> each class's total vote (n, C)."""
    return torch.zeros(labels.shape[0], num_classes, device=labels.device).scatter_add_(1, labels, weights)


def _vote(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels, weights (n, k), neighbours nearest first -> the class with the largest total vote;
    a tie goes to the tied class whose first neighbour comes first."""
    n, k = labels.shape
    totals = _totals(labels, weights, num_classes)  # (n, C)
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
