"""Weighted k-NN classification of embeddings (the DINO protocol) and its classification report."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                chunk_size: int = 4096) -> torch.LongTensor:
    """Predict a class for each row of `test_features` (N_test, D) from its k nearest rows of
    `train_features` (N_train, D) by cosine similarity, each neighbour voting for its label with
    weight exp(similarity / temperature) (Caron et al. 2021, DINO, following Wu et al. 2018).

    Safe for small sets: k is clipped to N_train, and an empty test set gives an empty result.
    Features are L2-normalised here, so raw embeddings may be passed. Test rows are processed in
    chunks of `chunk_size` to bound memory at (chunk_size, N_train).
    """
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError("features must be 2-D (N, D)")
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(f"{train_features.shape[0]} train features but {train_labels.shape[0]} labels")
    if train_features.shape[0] == 0:
        raise ValueError("k-NN needs at least one training sample")
    if test_features.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=test_features.device)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    train_labels = train_labels.long().to(train.device)
    predictions = []
    for chunk in F.normalize(test_features.float(), dim=1).split(chunk_size):
        similarity = chunk @ train.T  # (n, N_train)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (n, k)
        weights = (top_sim / temperature).exp()  # (n, k)
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)  # (n, C)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


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
