"""SDF losses: minima at perfect prediction, channel selection by label, eikonal on true distance
fields, KL, and the weighted combination's named terms."""

from __future__ import annotations

import pytest
import torch

from sensorium import losses
from sensorium.losses.sdf import SdfLoss, eikonal_loss, kl_loss, sdf_l1_loss, surface_loss


def _sdf(B=2, N=50, C=4, seed=0):
    return torch.randn(B, N, C, generator=torch.Generator().manual_seed(seed))


def test_public_names_resolve_lazily():
    assert losses.sdf_l1_loss is sdf_l1_loss and losses.surface_loss is surface_loss
    assert losses.eikonal_loss is eikonal_loss and losses.kl_loss is kl_loss


def test_l1_zero_at_perfect_prediction_and_per_class_mean():
    target = _sdf()
    assert sdf_l1_loss(target, target) == 0
    pred = target.clone()
    pred[..., 2] += 3.0  # one of four structures off by 3
    torch.testing.assert_close(sdf_l1_loss(pred, target), torch.tensor(3.0 / 4))
    assert sdf_l1_loss(pred, target) == sdf_l1_loss(target, pred)  # symmetric
    with pytest.raises(ValueError, match="differ"):
        sdf_l1_loss(pred[..., :3], target)


def test_surface_loss_reads_only_each_points_own_channel():
    labels = torch.randint(0, 4, (2, 50), generator=torch.Generator().manual_seed(1))
    own = torch.nn.functional.one_hot(labels, 4).bool()
    pred = torch.where(own, torch.zeros(()), _sdf())  # exact zero on the own channel
    assert surface_loss(pred, labels) == 0
    noisy_others = torch.where(own, pred, pred + 10.0)  # other structures' channels ignored
    assert surface_loss(noisy_others, labels) == 0
    shifted = torch.where(own, pred + 0.5, pred)
    torch.testing.assert_close(surface_loss(shifted, labels), torch.tensor(0.5))
    with pytest.raises(ValueError, match="does not match"):
        surface_loss(pred, labels[:, :10])


def test_eikonal_zero_for_a_true_distance_field():
    points = (torch.rand(500, 3) * 2 - 1).requires_grad_(True)
    sphere = points.norm(dim=-1) - 0.5  # an exact SDF: |grad| = 1 away from the centre
    (grad,) = torch.autograd.grad(sphere.sum(), points)
    assert eikonal_loss(grad) < 1e-10
    (grad2,) = torch.autograd.grad((2 * (points.norm(dim=-1) - 0.5)).sum(), points)  # |grad| = 2
    torch.testing.assert_close(eikonal_loss(grad2), torch.tensor(1.0))
    with pytest.raises(ValueError, match="end in 3"):
        eikonal_loss(grad[:, :2])


def test_kl_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(2, 8, 4)
    assert kl_loss(zeros, zeros) == 0
    assert kl_loss(zeros + 1.0, zeros) > 0 and kl_loss(zeros, zeros - 1.0) > 0
    torch.testing.assert_close(kl_loss(zeros + 2.0, zeros), torch.tensor(2.0))  # 0.5 * mean^2


def _inputs(perfect: bool):
    vol, near, surf = _sdf(seed=2), _sdf(seed=3), _sdf(seed=4)
    labels = torch.randint(0, 4, (2, 50), generator=torch.Generator().manual_seed(5))
    surf = torch.where(torch.nn.functional.one_hot(labels, 4).bool(), torch.zeros(()), surf)
    grads = torch.nn.functional.normalize(torch.randn(2, 30, 3), dim=-1)
    offset = 0.0 if perfect else 0.2
    return dict(vol_pred=vol + offset, vol_sdf=vol, near_pred=near + offset, near_sdf=near,
                surface_pred=surf + offset, surface_labels=labels, gradients=grads * (1 + offset))


def test_sdf_loss_zero_at_perfect_prediction():
    out = SdfLoss()(**_inputs(perfect=True))
    assert out.total.abs() < 1e-6
    assert set(out.terms) == {"volume", "near", "surface", "eikonal"}


def test_sdf_loss_terms_are_weighted_raw_terms_and_sum_to_total():
    loss = SdfLoss(volume=1.0, near=10.0, surface=1.0, eikonal=0.001, kl=0.5)
    kl = dict(kl_mean=torch.ones(2, 8, 4), kl_logvar=torch.zeros(2, 8, 4))
    out = loss(**_inputs(perfect=False), **kl)
    for name, weight in loss.weights.items():
        torch.testing.assert_close(out.terms[name], weight * out.raw[name])
    torch.testing.assert_close(out.total, sum(out.terms.values()))
    torch.testing.assert_close(out.raw["near"], torch.tensor(0.2))
    torch.testing.assert_close(out.raw["eikonal"], torch.tensor(0.04), atol=1e-6, rtol=1e-5)


def test_sdf_loss_skips_zero_weights_and_checks_inputs():
    inputs = _inputs(perfect=False)
    out = SdfLoss(eikonal=0.0)(**{k: v for k, v in inputs.items() if k != "gradients"})
    assert "eikonal" not in out.terms and "kl" not in out.terms
    with pytest.raises(ValueError, match="needs gradients"):
        SdfLoss()(**{k: v for k, v in inputs.items() if k != "gradients"})
    with pytest.raises(ValueError, match="needs kl_mean"):
        SdfLoss(kl=1e-3)(**inputs)
    with pytest.raises(ValueError, match=">= 0"):
        SdfLoss(near=-1.0)
