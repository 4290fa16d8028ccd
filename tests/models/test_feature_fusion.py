"""Fusion of per-encoder features: softmax weights and per-row gates sum to one."""

import pytest
import torch

from sensorium.models.fusion import FeatureFusion


@pytest.mark.parametrize("mode", ["weighted", "gate"])
def test_weights_and_gates_sum_to_one(mode):
    torch.manual_seed(0)
    fusion = FeatureFusion(3, 8, mode)
    x = torch.randn(2, 5, 3, 8)
    out = fusion(x)
    torch.testing.assert_close(out.weights, torch.full((2, 5, 3), 1 / 3))  # starts as the plain mean
    torch.testing.assert_close(out.fused, x.mean(dim=2))
    with torch.no_grad():  # any parameters: weights stay a distribution over the encoders
        for p in fusion.parameters():
            p.normal_()
    out = fusion(x)
    assert out.fused.shape == (2, 5, 8) and bool((out.weights > 0).all())
    torch.testing.assert_close(out.weights.sum(dim=-1), torch.ones(2, 5))
    torch.testing.assert_close(out.fused, torch.einsum("bke,bked->bkd", out.weights, x))
    if mode == "gate":  # per point: the rows' gates differ
        assert out.weights.flatten(0, 1).std(dim=0).max() > 1e-3
    else:
        torch.testing.assert_close(fusion.input_shares().sum(), torch.tensor(1.0))


def test_concat_and_errors():
    fusion = FeatureFusion(2, 4, "concat")
    x = torch.randn(3, 2, 4)
    out = fusion(x)
    assert out.weights is None and out.fused.shape == (3, 4)
    torch.testing.assert_close(fusion.input_shares().sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown fusion mode"):
        FeatureFusion(2, 4, "mean")
    with pytest.raises(ValueError, match="expected"):
        fusion(torch.randn(3, 3, 4))
