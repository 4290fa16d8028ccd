import pytest
import torch

from sensorium.layers.pooling import ViewAggregation


def _views(B=2, V=3, L=5, D=8):
    return torch.randn(B, V, L, D, generator=torch.Generator().manual_seed(0))


def test_tokens_mode_keeps_every_views_tokens_in_view_order():
    x = _views()
    out = ViewAggregation("tokens")(x)
    assert out.shape == (2, 15, 8)
    assert torch.equal(out, torch.cat([x[:, 0], x[:, 1], x[:, 2]], dim=1))  # view by view, nothing pooled
    assert list(ViewAggregation("tokens").parameters()) == []


def test_mean_averages_each_position_over_views():
    x = _views()
    out = ViewAggregation("mean")(x)
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out, (x[:, 0] + x[:, 1] + x[:, 2]) / 3)
    assert torch.allclose(ViewAggregation("mean")(x[:, [2, 0, 1]]), out)  # the order of views does not matter


def test_max_keeps_a_value_seen_in_one_view_only():
    x = torch.zeros(1, 4, 2, 3)
    x[0, 2, 1, 0] = 5.0  # one angle sees a defect at one position and channel
    out = ViewAggregation("max")(x)
    assert out.shape == (1, 2, 3)
    assert out[0, 1, 0] == 5.0 and out.sum() == 5.0
    assert ViewAggregation("mean")(x)[0, 1, 0] == pytest.approx(1.25)  # mean dilutes it by the 4 views
    y = _views()
    assert torch.equal(ViewAggregation("max")(y), torch.maximum(torch.maximum(y[:, 0], y[:, 1]), y[:, 2]))


def test_concat_projects_views_side_by_side_back_to_the_width():
    torch.manual_seed(0)
    x = _views()
    concat = ViewAggregation("concat", views=3, dim=8)
    out = concat(x)
    assert out.shape == (2, 5, 8) and torch.isfinite(out).all()
    # It starts near the mean of the views (its init), and it is a learned map of all views.
    assert (out - x.mean(dim=1)).abs().max() < 0.5
    out.sum().backward()
    assert concat.proj.weight.grad.abs().sum() > 0
    # The views are kept apart: swapping two views changes the result.
    assert not torch.allclose(concat(x[:, [1, 0, 2]]), out)
    with pytest.raises(ValueError, match="built for 3 views of width 8"):
        concat(_views(V=4))


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="unknown view aggregation"):
        ViewAggregation("sum")
    with pytest.raises(ValueError, match="needs the number of views"):
        ViewAggregation("concat", dim=8)
    with pytest.raises(ValueError, match="expected"):
        ViewAggregation("mean")(torch.zeros(2, 3, 4))
