import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sensorium.eval import classification_report, knn_predict


def test_weighted_vote_picks_closer_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05]])
    # Three class-1 neighbours against two much closer class-0 ones: exp(sim/T) weighting wins.
    assert knn_predict(train, labels, test, k=5, temperature=0.07).tolist() == [0]
    # With a huge temperature the vote is a plain majority.
    assert knn_predict(train, labels, test, k=5, temperature=1e6).tolist() == [1]


def test_small_sets_are_safe():
    train = F.normalize(torch.randn(3, 4), dim=1)
    labels = torch.tensor([0, 1, 2])
    assert knn_predict(train, labels, train, k=20).tolist() == [0, 1, 2]  # k > N_train is clipped
    assert knn_predict(train, labels, torch.empty(0, 4)).shape == (0,)
    with pytest.raises(ValueError):
        knn_predict(torch.empty(0, 4), torch.empty(0, dtype=torch.long), train)


def test_chunking_does_not_change_predictions():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 8, generator=g), torch.randn(33, 8, generator=g)
    labels = torch.randint(0, 5, (50,), generator=g)
    assert torch.equal(knn_predict(train, labels, test, chunk_size=7), knn_predict(train, labels, test))


def test_classification_report_values():
    report = classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["support"] == 0
    assert report["recall_macro"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
