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


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) rows of every rank -> (world * N, ...) in rank order, with gradients flowing back to
    each rank's own slice (`torch.distributed.nn.functional.all_gather`); `x` itself when no process
    group of more than one rank is running. Every rank must pass the same N."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07, *,
             negative_mask: torch.Tensor | None = None, gather: bool = False,
             negatives_a: torch.Tensor | None = None, negatives_b: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): row i of `a` (N, D) and row i of `b` (N, D)
    are a positive pair, every other row a negative. Inputs should be L2-normalised. Returns the
    mean of the a->b and b->a cross-entropies.

    gather: under torch.distributed, the negatives are the rows of every rank, gathered with
        gradients; each rank scores its own N rows against the global batch with labels offset by
        its rank (open_clip's `ClipLoss(local_loss=True)`), so the mean of the ranks' losses is the
        loss of one process on the concatenated batch, and DDP's gradient average its gradient.
    negative_mask: (N, N_global) bool, True where row i and global row j must not serve as each
        other's negatives (near-duplicates, e.g. two points of one image patch); applied in both
        directions, never to the positive itself.
    negatives_a / negatives_b: (M, D) extra negatives (a queue of earlier batches' rows, detached)
        for the b->a / a->b direction.

    >>> a = F.normalize(torch.randn(8, 16), dim=-1)
    >>> bool(info_nce(a, a, 0.1) < info_nce(a, a.roll(1, 0), 0.1))
    True
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    N = a.shape[0]
    a_all, b_all = (gather_rows(a), gather_rows(b)) if gather else (a, b)
    offset = 0
    if a_all.shape[0] != N:
        import torch.distributed as dist

        offset = dist.get_rank() * N
    if negative_mask is not None and negative_mask.shape != (N, a_all.shape[0]):
        raise ValueError(f"negative_mask must be ({N}, {a_all.shape[0]}), got {tuple(negative_mask.shape)}")
    with torch.autocast(a.device.type, enabled=False):  # fp32 logits, as in supcon_loss
        targets = torch.arange(N, device=a.device) + offset
        logits_ab = a.float() @ b_all.float().T / temperature  # (N, N_global)
        logits_ba = b.float() @ a_all.float().T / temperature  # (N, N_global)
        if negative_mask is not None:
            excluded = negative_mask.clone()
            excluded[torch.arange(N, device=a.device), targets] = False  # the positive always counts
            logits_ab = logits_ab.masked_fill(excluded, float("-inf"))
            logits_ba = logits_ba.masked_fill(excluded, float("-inf"))
        if negatives_b is not None:
            logits_ab = torch.cat([logits_ab, a.float() @ negatives_b.float().T / temperature], dim=1)
        if negatives_a is not None:
            logits_ba = torch.cat([logits_ba, b.float() @ negatives_a.float().T / temperature], dim=1)
        return 0.5 * (F.cross_entropy(logits_ab, targets) + F.cross_entropy(logits_ba, targets))


class NegativeQueue(nn.Module):
    """A FIFO of the last `size` rows pushed (MoCo, He et al. 2020), used as extra negatives of
    `info_nce`. Rows are stored detached; `rows()` returns only the filled part."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("queue", torch.zeros(size, dim), persistent=False)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long), persistent=False)

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(self.queue.dtype)[-self.queue.shape[0]:]  # (n, D)
        size, n = self.queue.shape[0], rows.shape[0]
        index = (self.pointer + torch.arange(n, device=rows.device)) % size
        self.queue[index] = rows
        self.pointer.copy_((self.pointer + n) % size)
        self.filled.copy_(torch.clamp(self.filled + n, max=size))

    def rows(self) -> torch.Tensor:
        return self.queue[: int(self.filled)]
