"""Stage 3 of the doppler recipe, `DopplerDiTTask`: a class-conditional DiT (`sensorium.models.dit`)
on the normalised latents `sensorium extract doppler` wrote ((z - channel_mean) / channel_std,
`latents.normalise`), trained by rectified flow (`sensorium.diffusion`), with an EMA of its weights
for sampling. Validation: the flow loss of the EMA model at fixed times and noise on the val latents
(a generator has no cheaper task metric; `sensorium eval doppler` measures the samples).

The task builds its network when it first sees its data (`configure_data`, from the datamodule's
spec): the latent shape, the users and the VAE the latents came from are written into the
hyperparameters, so a checkpoint rebuilds exactly the network it holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sensorium.config import as_config
from sensorium.diffusion import FlowMatching, TimeSampling, interpolate, sample
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError, DataError
from sensorium.models.dit import DiT
from sensorium.recipes.doppler.datamodule import DopplerLatentSpec
from sensorium.recipes.doppler.latents import denormalise, normalise


@dataclass
class DiTNetConfig:
    """`sensorium.models.dit.DiT`'s sizes (input size, channels and classes come from the latents)."""

    patch_size: int = 4
    dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    class_dropout: float = 0.1
    swiglu: bool = False
    rms_norm: bool = False
    rope: bool = False
    qk_norm: bool = False


@dataclass
class FlowConfig:
    time_sampling: TimeSampling = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    direction_weight: float = 0.0
    """Weight of LightningDiT's velocity-direction (cosine) term; 0: off."""


@dataclass
class SamplingConfig:
    """Defaults of `sensorium sample doppler` and of the evaluation (each can be overridden there)."""

    steps: int = 30
    solver: str = "heun"
    shift: float = 1.0
    cfg_scale: float = 4.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    """Times t (1 = noise) at which guidance applies; elsewhere the conditional prediction is used."""


class DopplerDiTTask(SensoriumTask):
    recipe = "doppler"
    monitor = "val/velocity_mse"
    monitor_mode = "min"
    data_spec_type = DopplerLatentSpec
    share_check_exempt = frozenset({"direction"})

    def __init__(self, net: DiTNetConfig | dict | None = None, flow: FlowConfig | dict | None = None,
                 sampling: SamplingConfig | dict | None = None, ema_decay: float = 0.9999,
                 latent_shape: list[int] | None = None, users: list[int] | None = None,
                 vae: dict | None = None, optim: OptimConfig | dict | None = None):
        """
        Args:
            ema_decay: decay per optimizer step of the weights' exponential moving average that
                sampling uses (DiT: 0.9999); warmed up as min(decay, (1 + step) / (10 + step)) so a
                short run's average is not dominated by its initial weights.
            latent_shape, users, vae: filled from the latents when the run starts (leave them unset):
                (C, h, w), the user ids in label order, and the VAE checkpoint the latents came from.
        """
        super().__init__(optim)
        self.net_config = as_config(DiTNetConfig, net)
        self.flow_config = as_config(FlowConfig, flow)
        self.sampling = as_config(SamplingConfig, sampling)
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError("model.ema_decay", f"must be in [0, 1), got {ema_decay}")
        self.ema_decay = ema_decay
        self.save_config(net=self.net_config, flow=self.flow_config, sampling=self.sampling,
                         ema_decay=ema_decay, latent_shape=latent_shape, users=users, vae=vae,
                         optim=self.optim)
        f = self.flow_config
        self.flow = FlowMatching(f.time_sampling, f.logit_mean, f.logit_std, f.direction_weight)
        self.net: DiT | None = None
        if latent_shape is not None and users is not None:
            self._build(list(latent_shape), list(users), vae)

    def configure_data(self, spec: DopplerLatentSpec) -> None:
        """Build the DiT for the latents' shape and users (with their channel statistics), or check a
        restored one fits them."""
        if self.net is None:
            self._build(list(spec.latent_shape), list(spec.users), spec.vae)
            self.channel_mean.copy_(torch.tensor(spec.channel_mean))
            self.channel_std.copy_(torch.tensor(spec.channel_std))
            return
        expected = (list(self.hparams["latent_shape"]), list(self.hparams["users"]))
        if (list(spec.latent_shape), list(spec.users)) != expected:
            raise DataError(spec.root, f"the latents' shape and users {list(spec.latent_shape)}, {list(spec.users)} "
                                       f"differ from the model's {expected[0]}, {expected[1]}")

    def _build(self, latent_shape: list[int], users: list[int], vae: dict | None) -> None:
        C, h, w = latent_shape
        if h != w:
            raise DataError("latents", f"the DiT takes square latents, got {h}x{w}")
        self.hparams.update(latent_shape=[C, h, w], users=users, vae=vae)
        n = self.net_config
        self.net = DiT(h, C, n.patch_size, n.dim, n.depth, n.num_heads, n.mlp_ratio, len(users),
                       n.class_dropout, n.swiglu, n.rms_norm, n.rope, n.qk_norm)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.register_buffer("channel_mean", torch.zeros(C))
        self.register_buffer("channel_std", torch.ones(C))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    def export_module(self) -> nn.Module:
        return self.ema

    def export_config(self) -> dict:
        return {**super().export_config(), "stage": "dit", "weights": "EMA",
                "channel_mean": self.channel_mean.tolist(), "channel_std": self.channel_std.tolist()}

    # --- latents <-> the DiT's space ----------------------------------------------------------------------
    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return normalise(z, self.channel_mean, self.channel_std)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return denormalise(x, self.channel_mean, self.channel_std)

    # --- training -------------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = batch["mean"] + batch["std"] * torch.randn_like(batch["std"])  # a posterior sample per step
        return self.flow.loss(self.net, self.normalise(z), cond=batch["label"]).terms

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._steps_before_batch = self.trainer.global_step

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # The EMA follows optimizer steps (Lightning's global_step), not batches: with gradient
        # accumulation a batch that only adds to the gradients leaves the weights as they were, and
        # averaging them in again would make the EMA decay accumulate_grad_batches times too fast.
        if self.trainer.global_step == self._steps_before_batch:
            return
        self.ema_steps += 1
        step = int(self.ema_steps)
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            ema, live = list(self.ema.parameters()), list(self.net.parameters())
            torch._foreach_lerp_(ema, live, 1.0 - decay)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, batch_idx, "test")  # `sensorium test`: reports on TEST, chooses nothing

    def _score(self, batch: dict[str, torch.Tensor], batch_idx: int, split: str) -> None:
        x0 = self.normalise(batch["mean"])
        g = torch.Generator(device=x0.device).manual_seed(1000 + batch_idx)  # the same noise every epoch
        noise = torch.randn(x0.shape, generator=g, device=x0.device)
        t = (torch.arange(len(x0), device=x0.device) % 8 + 0.5) / 8  # a fixed grid of times
        pred = self.ema(interpolate(x0, noise, t), t, batch["label"])
        mse = (pred.float() - (noise - x0)).square().mean()
        self.log(f"{split}/velocity_mse", mse, on_epoch=True, batch_size=len(x0), sync_dist=True)

    # --- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_latents(self, labels: torch.Tensor, cfg_scale: float | None = None, steps: int | None = None,
                         solver: str | None = None, shift: float | None = None,
                         cfg_interval: tuple[float, float] | None = None,
                         generator: torch.Generator | None = None, batch_size: int = 512) -> torch.Tensor:
        """(N,) label indices -> (N, C, h, w) latents in the VAE's space (denormalised), from the EMA
        weights; None arguments take `self.sampling`'s values."""
        s = self.sampling
        cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
        options = {"steps": steps or s.steps, "solver": solver or s.solver,
                   "shift": s.shift if shift is None else shift, "cfg_scale": cfg_scale,
                   "cfg_interval": tuple(cfg_interval or s.cfg_interval)}
        C, h, w = self.hparams["latent_shape"]
        model = self.ema.eval()
        out = []
        for chunk in labels.split(batch_size):
            noise = torch.randn((len(chunk), C, h, w), generator=generator).to(self.device)
            chunk = chunk.to(self.device)
            null = torch.full_like(chunk, model.null_class)
            out.append(self.denormalise(sample(model, noise, chunk, null, **options)).cpu())
        return torch.cat(out) if out else torch.zeros(0, C, h, w)
