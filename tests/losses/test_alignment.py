"""VA-VAE's VF loss: zero inside both margins, the stated value outside; the adaptive weight is the
ratio of gradient norms; and the Gaussian KL."""

import math

import pytest
import torch

from sensorium.losses import gaussian_kl, kl_per_sample
from sensorium.losses.alignment import VFLoss, adaptive_weight, vf_loss


def _grid(vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) vectors -> a (1, D, 1, N) 'feature map' with one vector per position."""
    return vectors.T[None, :, None, :]


def test_identical_features_cost_nothing():
    f = torch.randn(2, 8, 4, 4)
    terms = vf_loss(f.clone(), f)
    assert float(terms.total) == 0.0 and float(terms.cos) == 0.0 and float(terms.distmat) == 0.0


def test_the_cosine_term_is_zero_inside_its_margin_and_linear_outside():
    f = _grid(torch.tensor([[1.0, 0.0]]))
    for angle_cos, expected in ((0.6, 0.0), (0.5, 0.0), (0.3, 0.2), (-1.0, 1.5)):  # relu(1 - 0.5 - cos)
        z = _grid(torch.tensor([[angle_cos, math.sqrt(1 - angle_cos**2)]]))
        assert float(vf_loss(z, f).cos) == pytest.approx(expected, abs=1e-6)


def test_the_distance_matrix_term_is_zero_inside_its_margin():
    """Two positions: the features are orthogonal (cos 0); the latent's pair at cos 0.2 stays within
    the 0.25 margin, at cos 0.5 it costs (0.5 - 0.25) on both off-diagonal entries of 4."""
    f = _grid(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    for pair_cos, expected in ((0.2, 0.0), (0.5, 2 * 0.25 / 4)):
        z = _grid(torch.tensor([[1.0, 0.0], [pair_cos, math.sqrt(1 - pair_cos**2)]]))
        terms = vf_loss(z, f)
        assert float(terms.distmat) == pytest.approx(expected, abs=1e-6)
        assert float(terms.cos) == 0.0  # each position is within 60 degrees of its feature


def test_no_gradient_reaches_the_frozen_features():
    f = torch.randn(1, 4, 2, 2, requires_grad=True)
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    VFLoss()(z, f).total.backward()
    assert f.grad is None and z.grad is not None


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.randn(3, 5, requires_grad=True)
    nll, vf = 6.0 * w.sum(), 2.0 * w.sum() + (w**2).sum() * 0  # gradients 6 and 2 everywhere
    weight = adaptive_weight(nll, vf, w, scale=0.1)
    expected = 0.1 * (6.0 * math.sqrt(15)) / (2.0 * math.sqrt(15) + 1e-4)
    assert float(weight) == pytest.approx(expected, rel=1e-6)
    assert not weight.requires_grad
    assert float(adaptive_weight(nll, 1e-9 * w.sum(), w, scale=1.0, max_weight=50.0)) == 50.0  # clamped


def test_margins_are_checked():
    with pytest.raises(ValueError, match="margins"):
        VFLoss(cos_margin=-0.1)
    with pytest.raises(ValueError, match="differ"):
        vf_loss(torch.randn(1, 4, 2, 2), torch.randn(1, 8, 2, 2))


def test_gaussian_kl_is_zero_at_the_prior_and_sums_per_sample():
    zeros = torch.zeros(2, 3, 4, 4)
    assert float(gaussian_kl(zeros, zeros).abs().max()) == 0.0
    torch.testing.assert_close(kl_per_sample(zeros + 1.0, zeros), torch.full((2,), 0.5 * 48))
