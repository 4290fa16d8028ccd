"""The evaluation's field metrics on hand-computed cases: the augmentation gain per user (and its
relation to the overall gain), and the per-user bar plot."""

import numpy as np
import pytest
import torch
from PIL import Image

from sensorium.recipes.doppler.figures import write_gain_per_user_png
from sensorium.recipes.doppler.metrics import gain_per_user


def test_gain_per_user_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    real_only = torch.tensor([0, 1, 1, 0, 0, 2])  # user 0: 1/2, user 1: 1/3, user 2: 1
    augmented = torch.tensor([0, 0, 1, 1, 0, 0])  # user 0: 1, user 1: 2/3, user 2: 0
    gains = gain_per_user(augmented, real_only, labels, num_users=4)
    assert gains[:3] == pytest.approx([0.5, 1 / 3, -1.0]) and gains[3] is None  # user 3 has no sample
    assert gain_per_user(real_only, real_only, labels, 3) == [0.0, 0.0, 0.0]


def test_the_overall_gain_is_the_per_user_gains_weighted_by_test_images():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=g)
    a, b = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 5, (200,), generator=g)
    overall = (a == labels).float().mean() - (b == labels).float().mean()
    counts = torch.bincount(labels, minlength=5).double()
    per_user = torch.tensor(gain_per_user(a, b, labels, 5), dtype=torch.float64)
    assert float((per_user * counts).sum() / counts.sum()) == pytest.approx(float(overall), abs=1e-6)


def test_the_gain_bar_plot(tmp_path):
    gains = {"generated": {"1": {"mean": 0.25, "std": 0.05}, "2": {"mean": -0.1, "std": 0.0}},
             "classic": {"1": {"mean": 0.0, "std": 0.02}, "2": {"mean": 0.1, "std": 0.1}}}
    path = write_gain_per_user_png(tmp_path / "gain.png", gains, low_data_per_user=10, seeds=3)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 300
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # drawn, not blank
