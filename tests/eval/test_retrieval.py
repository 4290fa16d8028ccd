"""Retrieval top-k among a batch's candidates, with accepted near hits."""

import torch

from sensorium.eval.retrieval import positive_negative_similarities, retrieval_topk


def test_perfect_and_permuted_retrieval():
    torch.manual_seed(0)
    keys = torch.randn(20, 8)
    assert retrieval_topk(keys + 0.01 * torch.randn(20, 8), keys) == {1: 1.0, 5: 1.0}
    rolled = keys.roll(1, dims=0)  # query i is most similar to key i + 1
    result = retrieval_topk(rolled, keys, ks=(1, 2, 50))
    assert result[1] == 0.0 and result[50] == 1.0  # k clipped to the 20 candidates


def test_accepted_neighbours_count_as_hits():
    keys = torch.eye(4)
    queries = keys[[1, 0, 3, 2]]  # every query retrieves its neighbour in a pair
    accept = torch.zeros(4, 4, dtype=torch.bool)
    accept[0, 1] = accept[1, 0] = True  # only the first pair's neighbours are acceptable
    assert retrieval_topk(queries, keys, ks=(1,)) == {1: 0.0}
    assert retrieval_topk(queries, keys, ks=(1,), accept=accept) == {1: 0.5}


def test_positive_and_negative_similarities():
    a = torch.eye(3)
    positives, negatives = positive_negative_similarities(a, a)
    torch.testing.assert_close(positives, torch.ones(3))
    assert negatives.shape == (6,) and float(negatives.abs().max()) == 0.0
    _, fewer = positive_negative_similarities(a, a, exclude=torch.eye(3, dtype=torch.bool).roll(1, 1))
    assert fewer.shape == (3,)
