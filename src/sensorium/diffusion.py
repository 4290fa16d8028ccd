"""The flow-matching process: a training loss for a velocity model, and its ODE sampler with
classifier-free guidance (rectified flow: Liu et al. 2022, Lipman et al. 2022; the recipe of SD3,
Esser et al. 2024, and LightningDiT's `transport/`).

Convention: t in [0, 1], t = 0 is data and t = 1 is noise,
    x_t = (1 - t) x_0 + t eps,        eps ~ N(0, I)
and the model v(x_t, t, y) regresses the velocity dx_t/dt = eps - x_0. Sampling integrates
dx/dt = v from t = 1 (pure noise) to t = 0.

- Training times: logit-normal (t = sigmoid(n), n ~ N(mean, std); SD3, LightningDiT) or uniform.
  An optional velocity-direction term adds 1 - cos(v_pred, v) over channels (LightningDiT's
  `use_cosine_loss`).
- Timestep shift: t' = s t / (1 + (s - 1) t) moves the sampler's steps (s > 1: more of them at
  high noise, which larger or more redundant latents need; SD3's resolution shift).
- Classifier-free guidance (Ho & Salimans 2022): v = v_null + w (v_y - v_null) on **all** latent
  channels. DiT's and LightningDiT's released samplers guide only the first three channels (a
  leftover of 4-channel SD latents where the 4th was assumed unimportant); here every channel is
  guided. Guidance applies only for t inside `interval` (Kynkaenniemi et al. 2024, "Applying
  guidance in a limited interval"); elsewhere the conditional prediction is used as is.

The model is any callable `model(x, t, y) -> v` with x (B, ...), t (B,), y (B,) (or None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

VelocityModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
TimeSampling = Literal["logit_normal", "uniform"]
Solver = Literal["euler", "heun"]


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (x.ndim - 1)))  # (B, 1, ..., 1)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift s t / (1 + (s - 1) t): identity at s = 1, fixes 0 and 1."""
    if shift <= 0:
        raise ValueError(f"timestep shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t noise, t (B,)."""
    t = _expand(t, x0)
    return (1 - t) * x0 + t * noise


@dataclass
class FlowLoss:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    """Weighted terms by name ("velocity", and "direction" when its weight is non-zero); they sum to total."""


class FlowMatching:
    """Training side of rectified flow.

    Args:
        time_sampling: "logit_normal" (t = sigmoid(N(logit_mean, logit_std))) or "uniform".
        logit_mean, logit_std: of the logit-normal (SD3 and LightningDiT: 0 and 1).
        direction_weight: weight of the velocity-direction term 1 - cos(v_pred, v) (0: off).

    Example:
        >>> flow = FlowMatching()
        >>> out = flow.loss(model, latents, cond=labels)
        >>> out.total.backward()
    """

    def __init__(self, time_sampling: TimeSampling = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0, direction_weight: float = 0.0):
        if time_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"time_sampling must be 'logit_normal' or 'uniform', got {time_sampling!r}")
        if logit_std <= 0 or direction_weight < 0:
            raise ValueError("logit_std must be positive and direction_weight non-negative")
        self.time_sampling, self.logit_mean, self.logit_std = time_sampling, logit_mean, logit_std
        self.direction_weight = direction_weight

    def sample_time(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch,) training times in (0, 1)."""
        if self.time_sampling == "uniform":
            return torch.rand(batch, device=device, generator=generator)
        normal = torch.randn(batch, device=device, generator=generator)
        return torch.sigmoid(self.logit_mean + self.logit_std * normal)

    def loss(self, model: VelocityModel, x0: torch.Tensor, t: torch.Tensor | None = None,
             cond: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> FlowLoss:
        """Flow-matching loss of `model` on clean samples x0 (B, ...): mean squared error of the
        predicted velocity (over all entries), plus the direction term. t and noise are drawn when
        not given."""
        t = self.sample_time(x0.shape[0], x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        target = noise - x0
        pred = model(interpolate(x0, noise, t), t, cond)
        terms = {"velocity": F.mse_loss(pred.float(), target.float())}
        if self.direction_weight:
            cosine = F.cosine_similarity(pred.float(), target.float(), dim=1)  # over channels, per position
            terms["direction"] = self.direction_weight * (1 - cosine).mean()
        return FlowLoss(torch.stack(list(terms.values())).sum(), terms)


# --- sampling ----------------------------------------------------------------------------------------
def guided_velocity(model: VelocityModel, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                    null_cond: torch.Tensor | None, scale: float,
                    interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """v_null + scale (v_cond - v_null) on every channel when t lies in `interval` (all of t (B,) share
    one value in a sampler step), else the conditional prediction. scale 1 is the conditional and
    scale 0 the unconditional prediction; both passes run as one batch."""
    inside = interval[0] <= float(t.flatten()[0]) <= interval[1]
    if null_cond is None or not inside:
        return model(x, t, cond)
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null_cond]))
    v_cond, v_null = v.chunk(2)
    return v_null + scale * (v_cond - v_null)


def time_grid(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """(steps + 1,) times from 1 (noise) down to 0 (data), uniformly spaced, then shifted."""
    if steps < 1:
        raise ValueError(f"a sampler needs at least one step, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


@torch.no_grad()
def sample(model: VelocityModel, noise: torch.Tensor, cond: torch.Tensor | None = None,
           null_cond: torch.Tensor | None = None, steps: int = 50, solver: Solver = "heun",
           shift: float = 1.0, cfg_scale: float = 1.0, cfg_interval: tuple[float, float] = (0.0, 1.0),
           ) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (x = noise) to t = 0 and return x_0.

    Args:
        noise: (B, ...) the starting point, N(0, I).
        cond, null_cond: (B,) conditions and the null condition of CFG (None: no guidance).
        steps: solver steps (Heun costs two model calls per step except the last).
        solver: "euler" or "heun" (second order, EDM's).
        shift: timestep shift of the grid (see `shift_time`).
        cfg_scale: guidance scale w (1: conditional only; 0: unconditional).
        cfg_interval: times at which guidance applies.
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")
    if cfg_scale != 1.0 and null_cond is None:
        raise ValueError("cfg_scale != 1 needs null_cond")
    grid = time_grid(steps, shift, noise.device)
    x = noise
    guide = null_cond if cfg_scale != 1.0 else None

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        times = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        return guided_velocity(model, x, times, cond, guide, cfg_scale, cfg_interval).to(x.dtype)

    for i in range(steps):
        t, t_next = float(grid[i]), float(grid[i + 1])
        v = velocity(x, t)
        x_next = x + (t_next - t) * v
        if solver == "heun" and t_next > 0:
            x_next = x + (t_next - t) * 0.5 * (v + velocity(x_next, t_next))
        x = x_next
    return x
