import math

import pytest
import torch
import torch.nn.functional as F

from sensorium.losses import SupConLoss, info_nce, supcon_loss


def _clustered(labels, dim=16, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(int(labels.max()) + 1, dim, generator=g), dim=1)
    return F.normalize(centers[labels] + noise * torch.randn(len(labels), dim, generator=g), dim=1)


def test_minimum_at_perfect_clustering():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    orthogonal = torch.eye(16, dtype=torch.float64)[labels]  # each class collapsed to one point, classes orthogonal
    perfect = supcon_loss(orthogonal[:, None], labels)
    noisy = supcon_loss(_clustered(labels, noise=0.5).double()[:, None], labels)
    shuffled = supcon_loss(orthogonal[:, None], labels[torch.randperm(8)])
    assert perfect < noisy < shuffled
    # Closed form at perfect clustering: each anchor has 1 positive at sim 1 and 6 negatives at 0.
    T = 0.07
    expected = -math.log(math.exp(1 / T) / (math.exp(1 / T) + 6))
    assert perfect.item() == pytest.approx(expected, rel=1e-5)


def test_invariant_to_batch_order():
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 2])
    features = F.normalize(torch.randn(7, 2, 8), dim=-1)
    perm = torch.randperm(7)
    assert supcon_loss(features, labels) == pytest.approx(supcon_loss(features[perm], labels[perm]).item(), rel=1e-5)


def test_anchors_without_positive_are_excluded_not_nan():
    labels = torch.tensor([0, 0, 1, 2])  # classes 1 and 2 appear once
    features = F.normalize(torch.randn(4, 1, 8), dim=-1).requires_grad_()
    loss = supcon_loss(features, labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    only_pair = supcon_loss(features.detach(), labels)
    # Same value as computing only anchors 0 and 1 by hand.
    sims = features.detach()[:, 0] @ features.detach()[:, 0].T / 0.07
    lp = [sims[i, 1 - i] - torch.logsumexp(sims[i][torch.arange(4) != i], 0) for i in (0, 1)]
    assert only_pair.item() == pytest.approx(-(lp[0] + lp[1]).item() / 2, rel=1e-5)
    none = supcon_loss(F.normalize(torch.randn(3, 1, 4), dim=-1).requires_grad_(), torch.tensor([0, 1, 2]))
    assert none.item() == 0.0 and none.requires_grad
    # An empty selection (e.g. no sample of the batch has a modality) is 0 as well, not an error.
    empty = supcon_loss(torch.zeros(0, 1, 4, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_unsupervised_mode_is_simclr():
    views = F.normalize(torch.randn(6, 2, 8), dim=-1)
    assert supcon_loss(views) == pytest.approx(supcon_loss(views, torch.arange(6)).item())


def test_module_checks_settings():
    with pytest.raises(ValueError):
        SupConLoss(temperature=0)
    with pytest.raises(ValueError, match=r"\(B, V, D\)"):
        supcon_loss(torch.randn(4, 8), torch.arange(4))


def test_info_nce_symmetric_and_minimal_when_aligned():
    a = F.normalize(torch.randn(8, 16), dim=1)
    b = F.normalize(torch.randn(8, 16), dim=1)
    assert info_nce(a, b) == pytest.approx(info_nce(b, a).item(), rel=1e-6)
    assert info_nce(a, a) < info_nce(a, b)
