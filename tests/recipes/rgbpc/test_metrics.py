"""The action-head test's measurement: a head fitted on features that carry the action predicts it
on held-out steps and one fitted on noise does not, in float32 and in bfloat16 autocast alike."""

import pytest
import torch

from sensorium.recipes.rgbpc.metrics import action_head_test, fit_action_head


def _steps(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n steps of 16 points with 8-dim features; the action (3 dims) is the features of the point
    with the largest first feature, read through a fixed map, plus a task offset."""
    x = torch.randn(n, 16, 8, generator=generator)
    task = torch.randint(0, 2, (n,), generator=generator)
    target = x[torch.arange(n), x[..., 0].argmax(dim=1)]  # (n, 8)
    readout = torch.linspace(-1, 1, 24).reshape(8, 3)
    y = target @ readout + task[:, None].float()
    return x, task, y


@pytest.mark.parametrize("bf16", [False, True])
def test_action_head_test_tells_informative_features_from_noise(bf16):
    g = torch.Generator().manual_seed(0)
    (x_train, task_train, y_train), (x_test, task_test, y_test) = _steps(512, g), _steps(256, g)
    noise = torch.randn(512, 16, 8, generator=g), torch.randn(256, 16, 8, generator=g)
    result = action_head_test({"informative": (x_train, x_test), "noise": noise}, task_train, y_train, task_test,
                              y_test, num_tasks=2, seeds=2, steps=300, lr=3e-3, bf16=bf16)
    assert result["informative"]["error"] < 0.35
    assert result["noise"]["error"] > 0.7  # only the task offset is left to predict
    assert len(result["informative"]["errors"]) == 2


def test_bf16_heads_train_float32_weights_to_the_same_fit():
    g = torch.Generator().manual_seed(1)
    x, task, y = _steps(256, g)
    heads = {bf16: fit_action_head(x, task, y, 2, seed=0, steps=200, lr=3e-3, bf16=bf16) for bf16 in (False, True)}
    assert all(p.dtype == torch.float32 for p in heads[True].parameters())
    with torch.no_grad():
        errors = {k: float((head(x, task) - y).pow(2).mean()) for k, head in heads.items()}
    assert errors[True] == pytest.approx(errors[False], rel=0.25)
    assert errors[True] < 0.5 * float(y.var(dim=0).sum())


def test_bf16_heads_learn_inside_an_outer_autocast_region():
    # The evaluation fits its heads inside `torch.autocast(enabled=False)`; an inner bf16 region with
    # the cast cache on would reuse the first step's weights until the outer region ends (the heads
    # diverged: held-out errors in the millions).
    g = torch.Generator().manual_seed(2)
    x, task, y = _steps(256, g)
    plain = fit_action_head(x, task, y, 2, seed=0, steps=150, lr=3e-3, bf16=True)
    with torch.autocast("cpu", enabled=False):
        nested = fit_action_head(x, task, y, 2, seed=0, steps=150, lr=3e-3, bf16=True)
    for a, b in zip(plain.parameters(), nested.parameters()):
        torch.testing.assert_close(a, b)
