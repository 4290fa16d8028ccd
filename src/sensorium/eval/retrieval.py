"""Cross-modal retrieval metrics: for query i the right key is key i (a point and its patch, a
window and its point cloud); top-k accuracy among the candidates given, with an optional set of
other keys that also count as a hit (a key within one patch of the right one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def retrieval_topk(queries: torch.Tensor, keys: torch.Tensor, ks: tuple[int, ...] = (1, 5),
                   accept: torch.Tensor | None = None) -> dict[int, float]:
    """Top-k accuracy of retrieving key i for query i by cosine similarity.

    queries, keys: (N, D) (normalised here). accept: (N, N) bool, True where key j is an acceptable
    hit for query i besides key i itself. Returns {k: share of queries whose right key (or an
    accepted one) is among their k most similar keys}; k is clipped to N. Chance level for top-k
    without `accept` is k / N.
    """
    if queries.shape != keys.shape or queries.ndim != 2:
        raise ValueError(f"queries and keys must both be (N, D), got {tuple(queries.shape)} and {tuple(keys.shape)}")
    N = queries.shape[0]
    if N == 0:
        return {k: 0.0 for k in ks}
    with torch.autocast(queries.device.type, enabled=False):  # fp32 similarities: bf16 would tie close ranks
        similarity = F.normalize(queries.float(), dim=1) @ F.normalize(keys.float(), dim=1).T  # (N, N)
    hit = torch.eye(N, dtype=torch.bool, device=queries.device)
    if accept is not None:
        hit = hit | accept.to(hit.device)
    order = similarity.topk(min(max(ks), N), dim=1).indices  # (N, k_max)
    hits_ranked = hit.gather(1, order)  # (N, k_max): is the r-th ranked key a hit
    return {k: float(hits_ranked[:, : min(k, N)].any(dim=1).float().mean()) for k in ks}


def positive_negative_similarities(a: torch.Tensor, b: torch.Tensor,
                                   exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of the positive pairs (a_i, b_i) (N,) and of all other pairs (the
    negatives, minus those `exclude` (N, N) marks), for histograms of how well the two sides are
    aligned."""
    with torch.autocast(a.device.type, enabled=False):
        similarity = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T  # (N, N)
    eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    negatives = ~eye if exclude is None else ~eye & ~exclude.to(eye.device)
    return similarity.diagonal(), similarity[negatives]
