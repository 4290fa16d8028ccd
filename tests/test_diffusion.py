"""The flow-matching process (sensorium/diffusion.py): the loss's target, the sampler on a 2-D toy
distribution, the timestep shift, and classifier-free guidance on every channel."""

import pytest
import torch
from torch import nn

from sensorium.diffusion import FlowMatching, guided_velocity, interpolate, sample, shift_time, time_grid


class VelocityMLP(nn.Module):
    """v(x, t) for 2-D points, with the time as an input feature."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x, t, y=None):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def test_the_loss_is_zero_for_the_true_velocity_and_positive_otherwise():
    flow = FlowMatching()
    x0, noise, t = torch.randn(16, 4, 3, 3), torch.randn(16, 4, 3, 3), torch.rand(16)
    xt = interpolate(x0, noise, t)

    def oracle(x, time, y):  # recovers eps - x0 from x_t given the pair it was made from
        assert torch.equal(x, xt) and torch.equal(time, t)
        return noise - x0

    assert float(flow.loss(oracle, x0, t, noise=noise).total) == 0.0
    off = flow.loss(lambda x, time, y: torch.zeros_like(x), x0, t, noise=noise)
    assert torch.allclose(off.total, (noise - x0).square().mean())
    both = FlowMatching(direction_weight=0.5).loss(lambda x, time, y: -(noise - x0), x0, t, noise=noise)
    assert set(both.terms) == {"velocity", "direction"}
    torch.testing.assert_close(both.terms["direction"], torch.tensor(1.0))  # 0.5 * (1 - cos(-v, v)) = 0.5 * 2


def test_logit_normal_times_lie_in_the_open_interval_with_median_one_half():
    t = FlowMatching().sample_time(20000, generator=torch.Generator().manual_seed(0))
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(t.median()) - 0.5) < 0.01


def test_timestep_shift_fixes_the_ends_and_moves_steps_towards_noise():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_time(t, 1.0), t)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:-1] > t[1:-1]).all())
    grid = time_grid(10, 3.0)
    assert grid[0] == 1 and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())


TARGET_MEAN = torch.tensor([2.0, -1.0])
TARGET_COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])


@pytest.fixture(scope="module")
def toy_flow():
    """v(x, t) trained by flow matching on a correlated 2-D Gaussian (800 steps, ~2 s)."""
    torch.manual_seed(0)
    chol = torch.linalg.cholesky(TARGET_COV)
    model, flow = VelocityMLP(), FlowMatching(time_sampling="uniform")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 800)
    for _ in range(800):
        loss = flow.loss(model, TARGET_MEAN + torch.randn(512, 2) @ chol.T).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model


@pytest.mark.parametrize("solver, steps", [("euler", 50), ("heun", 20)])
def test_samples_of_a_trained_toy_flow_match_the_target_mean_and_covariance(toy_flow, solver, steps):
    """Integrating the learnt velocity from N(0, I) noise lands on the target: its mean and
    covariance (noise itself has mean 0 and identity covariance)."""
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    x = sample(toy_flow, noise, steps=steps, solver=solver)
    assert torch.allclose(x.mean(0), TARGET_MEAN, atol=0.06)
    assert torch.allclose(torch.cov(x.T), TARGET_COV, atol=0.12)


class ChannelModel(nn.Module):
    """A 4-channel 'model' whose every channel depends on the condition differently."""

    def forward(self, x, t, y):
        scale = (y.float() + 1)[:, None, None, None] * torch.arange(1, 5).float()[None, :, None, None]
        return x * scale + t[:, None, None, None]


def test_cfg_scale_0_and_1_give_the_unconditional_and_conditional_predictions_on_every_channel():
    model = ChannelModel()
    x, t = torch.randn(3, 4, 2, 2), torch.full((3,), 0.4)
    cond, null = torch.tensor([0, 1, 2]), torch.full((3,), 9)
    v_cond, v_null = model(x, t, cond), model(x, t, null)
    torch.testing.assert_close(guided_velocity(model, x, t, cond, null, 0.0), v_null)
    torch.testing.assert_close(guided_velocity(model, x, t, cond, null, 1.0), v_cond)
    # Scale 4: every channel is guided (DiT's released sampler guides only the first three).
    guided = guided_velocity(model, x, t, cond, null, 4.0)
    torch.testing.assert_close(guided, v_null + 4.0 * (v_cond - v_null))
    assert not torch.allclose(guided[:, 3], v_cond[:, 3])


def test_guidance_applies_only_inside_its_interval():
    model = ChannelModel()
    x, cond, null = torch.randn(2, 4, 2, 2), torch.tensor([0, 1]), torch.full((2,), 9)
    outside = torch.full((2,), 0.95)
    guided = guided_velocity(model, x, outside, cond, null, 4.0, (0.0, 0.89))
    torch.testing.assert_close(guided, model(x, outside, cond))
    inside = torch.full((2,), 0.5)
    guided = guided_velocity(model, x, inside, cond, null, 4.0, (0.0, 0.89))
    assert not torch.allclose(guided, model(x, inside, cond))


def test_sampling_with_guidance_needs_a_null_condition():
    with pytest.raises(ValueError, match="null_cond"):
        sample(ChannelModel(), torch.randn(2, 4, 2, 2), torch.tensor([0, 1]), None, steps=2, cfg_scale=2.0)
