import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sensorium.eval import classification_report, knn_predict
from sensorium.eval.knn import knn_predict_ks


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


def _dino_reference(train, labels, test, k, temperature, num_classes):
    """The weighted cosine k-NN as it was written before the votes/metric options (argmax of the
    exp(sim / T) votes): the defaults must still give exactly its predictions."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    top_sim, top_idx = similarity.topk(min(k, len(train)), dim=1)
    votes = torch.zeros(len(test), num_classes).scatter_add_(1, labels[top_idx], (top_sim / temperature).exp())
    return votes.argmax(dim=1)


@pytest.mark.parametrize("k", [1, 5, 20, 200])
def test_defaults_are_the_dino_weighted_cosine_vote(k):
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(120, 16, generator=g), torch.randn(40, 16, generator=g)
    labels = torch.randint(0, 6, (120,), generator=g)
    expected = _dino_reference(train, labels, test, k, 0.07, 6)
    assert torch.equal(knn_predict(train, labels, test, k=k), expected)
    assert torch.equal(knn_predict(train, labels, test, k=k, votes="weighted", metric="cosine"), expected)


def test_uniform_votes_are_a_majority_vote():
    # The query's 5 neighbours by cosine, nearest first: class 0 (sim ~1.0), class 0, class 1,
    # class 1, class 1. Weighted votes follow the two near class-0 rows; uniform ones count 3 to 2.
    train = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.6, 0.4], [0.55, 0.45], [0.5, 0.5], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, k=5, temperature=0.02).tolist() == [0]
    assert knn_predict(train, labels, test, k=5, votes="uniform").tolist() == [1]
    # By hand on random data: the mode of the k nearest labels (no ties with k odd and 2 classes).
    g = torch.Generator().manual_seed(2)
    train, test = torch.randn(60, 4, generator=g), torch.randn(25, 4, generator=g)
    labels = torch.randint(0, 2, (60,), generator=g)
    nearest = (F.normalize(test, dim=1) @ F.normalize(train, dim=1).T).topk(7, dim=1).indices
    majority = (labels[nearest].sum(dim=1) >= 4).long()
    assert torch.equal(knn_predict(train, labels, test, k=7, votes="uniform"), majority)


def test_euclidean_and_cosine_disagree_where_length_matters():
    # Far along the query's direction (cosine 1, distance 9) against near but turned (distance 0.3).
    train = torch.tensor([[10.0, 0.0], [1.0, 0.3]])
    labels = torch.tensor([0, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, k=1, metric="cosine").tolist() == [0]
    assert knn_predict(train, labels, test, k=1, metric="euclidean").tolist() == [1]
    # Weighted euclidean votes still weigh at distances where exp(-d / T) underflows to 0 for every
    # neighbour: two class-1 rows just behind a class-0 one outvote it (without the shift all three
    # weights would be 0 and the tie would go to the nearest, class 0).
    far = torch.tensor([[1000.0, 0.0], [1000.01, 0.0], [1000.02, 0.0]])
    assert knn_predict(far, torch.tensor([0, 1, 1]), torch.zeros(1, 2), k=3, temperature=0.07,
                       metric="euclidean").tolist() == [1]


@pytest.mark.parametrize("votes", ["weighted", "uniform"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_several_k_from_one_search_equal_separate_calls(votes, metric):
    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(80, 8, generator=g), torch.randn(30, 8, generator=g)
    labels = torch.randint(0, 4, (80,), generator=g)
    ks = [1, 3, 5, 20, 100]  # 100 > N_train: clipped, as in knn_predict
    together = knn_predict_ks(train, labels, test, ks, votes=votes, metric=metric, chunk_size=7)
    assert list(together) == ks
    for k in ks:
        assert torch.equal(together[k], knn_predict(train, labels, test, k=k, votes=votes, metric=metric)), k


def test_vote_ties_go_to_the_class_with_the_nearest_neighbour():
    # Uniform, k=4: two votes each for classes 2 and 0; class 2 holds the nearest neighbour. A rule
    # by class index would say 0, whatever the order of the rows.
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [-1.0, 0.0]])
    labels = torch.tensor([2, 0, 0, 2, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, k=4, votes="uniform").tolist() == [2]
    assert knn_predict(train[[3, 2, 1, 0, 4]], labels[[3, 2, 1, 0, 4]], test, k=4, votes="uniform").tolist() == [2]
    # Exactly equal weighted totals (two rows at the same point, one per class): the first-listed
    # neighbour's class, the same on every call.
    twins = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    predictions = {tuple(knn_predict(twins, torch.tensor([1, 0]), test, k=2).tolist()) for _ in range(5)}
    assert len(predictions) == 1


def test_bad_options_are_refused():
    train, labels = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="votes"):
        knn_predict(train, labels, train, votes="majority")
    with pytest.raises(ValueError, match="metric"):
        knn_predict(train, labels, train, metric="manhattan")
    with pytest.raises(ValueError, match="k >= 1"):
        knn_predict_ks(train, labels, train, [])


def test_classification_report_values():
    report = classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["support"] == 0
    assert report["recall_macro"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize("votes", ["weighted", "uniform"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_vote_shares_sum_to_one_and_back_the_prediction(votes, metric):
    from sensorium.eval.knn import knn_votes_ks

    g = torch.Generator().manual_seed(4)
    train, test = torch.randn(80, 8, generator=g), torch.randn(30, 8, generator=g)
    labels = torch.randint(0, 4, (80,), generator=g)
    ks = [1, 5, 20]
    result = knn_votes_ks(train, labels, test, ks, votes=votes, metric=metric, num_classes=6, chunk_size=7)
    predictions = knn_predict_ks(train, labels, test, ks, votes=votes, metric=metric, num_classes=6)
    for k in ks:
        prediction, shares = result[k]
        assert torch.equal(prediction, predictions[k]), k  # the same predictions as without shares
        assert shares.shape == (30, 6) and (shares >= 0).all()
        assert torch.allclose(shares.sum(dim=1), torch.ones(30))
        assert (shares[:, 4:] == 0).all()  # classes no neighbour holds get no share
        top = shares.max(dim=1).values
        assert torch.allclose(shares.gather(1, prediction[:, None])[:, 0], top)
    assert (result[1].shares == 1).sum() == 30  # k = 1: the single neighbour takes the whole vote


def test_vote_shares_by_hand():
    from sensorium.eval.knn import knn_votes_ks

    # Query [1, 0]; neighbours by cosine: [1, 0] (class 0, sim 1), [0.6, 0.8] (class 1, sim 0.6),
    # [0, 1] (class 0, sim 0), [-1, 0] (class 2, sim -1).
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 2])
    test = torch.tensor([[1.0, 0.0]])
    t = 0.5
    w = torch.tensor([1.0, 0.6, 0.0]).div(t).exp()  # k = 3: the first three
    expected = torch.tensor([w[0] + w[2], w[1], 0.0]) / w.sum()
    assert torch.allclose(knn_votes_ks(train, labels, test, [3], temperature=t)[3].shares[0], expected)
    uniform = knn_votes_ks(train, labels, test, [4], votes="uniform")[4].shares[0]
    assert torch.allclose(uniform, torch.tensor([0.5, 0.25, 0.25]))
    # Weights that underflow to 0 unshifted (exp(-1 / 0.001) for every neighbour: the query is
    # opposite them all) still give shares: nearest first, relative to it.
    bunch = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2]])
    assert (bunch @ torch.tensor([-1.0, 0.0]) / 0.001).exp().sum() == 0  # unshifted, every weight underflows
    far = knn_votes_ks(bunch, labels[:3], torch.tensor([[-1.0, 0.0]]), [3], temperature=0.001)[3].shares
    assert torch.isfinite(far).all() and torch.allclose(far.sum(dim=1), torch.ones(1))
    assert far[0, 0] > 0.99  # the least far neighbour (similarity -0.98) outweighs the rest by exp(10)
    distant = torch.tensor([[1000.0, 0.0], [1000.01, 0.0], [1000.02, 0.0]])
    shares = knn_votes_ks(distant, torch.tensor([0, 1, 1]), torch.zeros(1, 2), [3], metric="euclidean")[3].shares[0]
    w = torch.tensor([0.0, -0.01, -0.02]).div(0.07).exp()
    assert torch.allclose(shares, torch.tensor([w[0], w[1] + w[2]]) / w.sum(), atol=1e-4)
    empty = knn_votes_ks(train, labels, torch.empty(0, 2), [3])[3]
    assert empty.prediction.shape == (0,) and empty.shares.shape == (0, 3)
