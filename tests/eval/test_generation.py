import numpy as np
import pytest
import torch

from sensorium.eval.generation import class_accuracy, frechet_distance


def test_frechet_distance_of_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g)
    b = torch.randn(20000, 3, generator=g) * 2.0 + torch.tensor([1.0, 0.0, 0.0])
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.03)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_survives_rank_deficient_covariances():
    a = np.random.default_rng(0).normal(size=(5, 16))  # fewer samples than dimensions
    assert np.isfinite(frechet_distance(a, a + 0.1)) and frechet_distance(a, a + 0.1) >= 0


def test_class_accuracy_per_class():
    report = class_accuracy(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0]), num_classes=4)
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["per_class"] == [0.5, 0.5, 1.0, None]
