"""bf16_autocast: a training loop inside an outer autocast region trains as it does outside one."""

import torch

from sensorium.engine.precision import bf16_autocast


def _train(autocast, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(steps):
        with autocast():
            loss = (model(x).float() - y).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.weight.detach().clone()


def test_a_loop_inside_an_outer_autocast_region_trains_as_outside_it():
    helper = lambda: bf16_autocast("cpu")
    plain = _train(helper)
    with torch.autocast("cpu", enabled=False):
        nested = _train(helper)
    torch.testing.assert_close(nested, plain)


def test_with_the_cast_cache_on_the_nested_loop_reuses_stale_weights():
    # What the helper prevents: torch's default cache outlives each step inside an outer region.
    cached = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    plain = _train(cached)
    with torch.autocast("cpu", enabled=False):
        nested = _train(cached)
    assert not torch.allclose(nested, plain)
    torch.testing.assert_close(plain, _train(lambda: bf16_autocast("cpu")))  # outside a region: the same


def test_disabled_is_float32():
    with bf16_autocast("cpu", enabled=False):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32
    with bf16_autocast("cpu"):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
