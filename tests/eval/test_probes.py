import pytest
import torch

from sensorium.eval.probes import knn_accuracy, standardize


def test_standardize_fits_the_bank_only():
    g = torch.Generator().manual_seed(0)
    bank, query = 3 + 2 * torch.randn(200, 5, generator=g), torch.randn(40, 5, generator=g)
    bank_z, query_z = standardize(bank, query)
    assert torch.allclose(bank_z.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(bank_z.std(0), torch.ones(5), atol=1e-5)
    # The queries are mapped with the bank's statistics: changing them does not move the bank.
    bank_z2, query_z2 = standardize(bank, query + 100)
    assert torch.equal(bank_z, bank_z2) and not torch.allclose(query_z, query_z2)


def test_per_group_standardisation_is_invariant_to_each_group_affine_change():
    """Each group's (sensor's) own offset and scale per dimension drop out: the standardised
    features, and so the k-NN on them, are those of the clean features."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    clean = torch.randn(3, 8, generator=g)[labels] + 0.3 * torch.randn(300, 8, generator=g)  # class structure
    groups = torch.arange(300) // 100  # three groups, every class in each
    offsets, scales = 50 * torch.randn(3, 8, generator=g), 1 + torch.rand(3, 8, generator=g)
    shifted = clean * scales[groups] + offsets[groups]
    bank = torch.arange(300) % 5 != 0  # a fifth of every group is queried
    args = (groups[bank], groups[~bank])
    bank_z, query_z = standardize(shifted[bank], shifted[~bank], *args)
    bank_c, query_c = standardize(clean[bank], clean[~bank], *args)
    assert torch.allclose(bank_z, bank_c, atol=1e-4) and torch.allclose(query_z, query_c, atol=1e-4)
    for group in range(3):
        rows = bank_z[groups[bank] == group]
        assert torch.allclose(rows.mean(0), torch.zeros(8), atol=1e-5)
    assert knn_accuracy(bank_z, labels[bank], query_z, labels[~bank], k=10) > 0.9


def test_per_group_standardisation_needs_bank_rows_of_every_query_group():
    bank, query = torch.randn(10, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="group 2"):
        standardize(bank, query, torch.zeros(10, dtype=torch.long), torch.full((4,), 2))
