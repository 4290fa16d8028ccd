"""The doppler recipe's two trained stages.

**Stage 1, `DopplerVAETask`**: a user-conditioned KL-VAE (`sensorium.models.vae`) trained with
    rec   = sum over pixels of |x - x_hat|, averaged over the batch (LDM's reduction)
    kl    = kl_weight (1e-6) x the posterior's KL, summed over latent entries, averaged over the batch
    vf    = w x VF(proj(z), f(x)): VA-VAE's alignment of a 1x1 projection of the latent with a frozen
            encoder's patch features (`sensorium.losses.alignment`), w = vf_weight x the ratio of the
            gradient norms of rec and VF at the encoder's last layer
    gan   = optional: a patch discriminator's hinge terms after `disc_start` steps, weighted
            adaptively at the decoder's last layer (LDM)
Validation: PSNR of val reconstructions (posterior mean), which picks best.ckpt.

**Stage 3, `DopplerDiTTask`**: a class-conditional DiT (`sensorium.models.dit`) on the normalised
latents `sensorium extract doppler` wrote ((z - channel_mean) / channel_std), trained by rectified
flow (`sensorium.diffusion`), with an EMA of its weights for sampling. Validation: the flow loss of
the EMA model at fixed times and noise on the val latents (a generator has no cheaper task metric;
`sensorium eval doppler` measures the samples).

Both tasks build their network when they first see their data (`configure_data`, from the datamodule's spec): the users, the
image size and the latent shape come from the data, and are written into the hyperparameters, so
a checkpoint rebuilds exactly the network it holds.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.config import as_config
from sensorium.diffusion import FlowMatching, TimeSampling, interpolate, sample
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError, DataError
from sensorium.losses.adversarial import generator_loss, hinge_discriminator_loss
from sensorium.losses.alignment import VFLoss, adaptive_weight
from sensorium.losses.kl import kl_per_sample
from sensorium.models.dit import DiT
from sensorium.models.vae import ConditionalVAE, PatchDiscriminator
from sensorium.recipes.doppler.datamodule import DopplerImageSpec, DopplerLatentSpec
from sensorium.recipes.doppler.extract import denormalise, normalise
from sensorium.recipes.doppler.foundation import build_foundation


# --- stage 1: the VAE -----------------------------------------------------------------------------------
@dataclass
class VAENetConfig:
    """`sensorium.models.vae.ConditionalVAE`'s sizes; the defaults are the demo's (f4, 4 channels)."""

    widths: tuple[int, ...] = (16, 32, 64)
    z_channels: int = 4
    num_res_blocks: int = 1
    cond_dim: int = 64
    mid_attention: bool = True
    conditional: bool = True
    """Condition encoder and decoder on the user (the doppler note's user-conditioned VA-VAE)."""


@dataclass
class VAELossConfig:
    kl_weight: float = 1e-6
    disc_weight: float = 0.0
    """Weight of the adversarial term (LDM: 0.5); 0 builds no discriminator."""
    disc_start: int = 50001
    """Optimiser step at which the discriminator starts (before it, its terms are computed at weight 0)."""
    disc_width: int = 64
    disc_layers: int = 3


@dataclass
class VFConfig:
    """VA-VAE's alignment term (`sensorium.losses.alignment`)."""

    weight: float = 0.1
    """vf_weight, the factor on the adaptive weight; 0 turns the term (and the frozen encoder) off."""
    pretrained: str | None = None
    """Local DINOv2 directory (`transformers` format); None: a small frozen random conv net (demo)."""
    input_size: int = 224
    """DINOv2's input resolution (a multiple of its patch size)."""
    random_widths: tuple[int, ...] = (32, 64)
    """Widths of the random conv net (one stride-2 stage each); its features are resized to the
    latent grid."""
    random_seed: int = 0
    cos_margin: float = 0.5
    distmat_margin: float = 0.25
    cos_weight: float = 1.0
    distmat_weight: float = 1.0


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1]."""
    mse = (x.float() - y.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


class DopplerVAETask(SensoriumTask):
    recipe = "doppler"
    data_spec_type = DopplerImageSpec
    monitor = "val/psnr"
    monitor_mode = "max"
    # The terms' values are on unrelated scales by design: rec is a sum over pixels, kl is 1e-6 of
    # a sum, and the VF term's strength is set by gradient norms, not by its value. Their shares are
    # logged, not checked.
    share_check_exempt = frozenset({"rec", "kl", "vf", "gan", "disc"})

    def __init__(self, net: VAENetConfig | dict | None = None, loss: VAELossConfig | dict | None = None,
                 vf: VFConfig | dict | None = None, users: list[int] | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 optim: OptimConfig | dict | None = None):
        """users, image_size, channels: filled from the data when the run starts (leave them unset)."""
        super().__init__(optim)
        self.net_config = as_config(VAENetConfig, net)
        self.loss_config = as_config(VAELossConfig, loss)
        self.vf_config = as_config(VFConfig, vf)
        self.save_config(net=self.net_config, loss=self.loss_config, vf=self.vf_config, users=users,
                         image_size=image_size, channels=channels, optim=self.optim)
        v = self.vf_config
        self.vf_loss = VFLoss(v.cos_margin, v.distmat_margin, v.cos_weight, v.distmat_weight)
        self.vae: ConditionalVAE | None = None
        self._preview: dict[str, torch.Tensor] | None = None
        if users is not None and image_size is not None and channels is not None:
            self._build(list(users), int(image_size), int(channels))

    # --- the network, from the data -------------------------------------------------------------------
    def configure_data(self, spec: DopplerImageSpec) -> None:
        """Build the network for the data's users, size and channels, or check a restored one fits them."""
        found = (list(spec.users), spec.image_size, spec.channels)
        if self.vae is None:
            self._build(*found)
            return
        expected = (list(self.hparams["users"]), self.hparams["image_size"], self.hparams["channels"])
        if expected != found:
            raise DataError(spec.root, f"the data's users, image size and channels {found} differ from the model's "
                                       f"{expected}")

    def _build(self, users: list[int], image_size: int, channels: int) -> None:
        self.hparams.update(users=users, image_size=image_size, channels=channels)
        n = self.net_config
        self.vae = ConditionalVAE(channels, tuple(n.widths), n.z_channels, n.num_res_blocks,
                                  len(users) if n.conditional else None, n.cond_dim, n.mid_attention)
        self.latent_shape = self.vae.latent_shape((image_size, image_size))
        v = self.vf_config
        self.foundation = self.projection = None
        if v.weight > 0:
            self.foundation = build_foundation(channels, v.pretrained, v.input_size, tuple(v.random_widths),
                                               v.random_seed)
            # The 1x1 projection of the latent to the frozen features' width (VA-VAE's linear_proj).
            self.projection = nn.Conv2d(n.z_channels, self.foundation.out_dim, kernel_size=1)
        self.discriminator = None
        if self.loss_config.disc_weight > 0:
            loss = self.loss_config
            self.discriminator = PatchDiscriminator(channels, loss.disc_width, loss.disc_layers)

    def export_module(self) -> nn.Module:
        return self.vae

    # The frozen encoder is rebuilt from its config (seeded random weights, or the DINOv2 directory)
    # and never trained: checkpoints leave it out (a DINOv2-B would add 350 MB to each).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("foundation.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.foundation is not None:  # resuming a fit: Lightning loads strictly
            frozen = self.foundation.state_dict()
            checkpoint["state_dict"].update({f"foundation.{k}": v for k, v in frozen.items()})

    def export_config(self) -> dict:
        return {**super().export_config(), "stage": "vae", "latent_shape": list(self.latent_shape)}

    # --- training -------------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"] * 2 - 1  # (B, C, H, W) in [-1, 1]
        labels = batch["label"] if self.vae.num_classes else None
        recon, posterior, z = self.vae(x, labels)
        rec = (x - recon.float()).abs().flatten(1).sum(1).mean()
        kl = kl_per_sample(posterior.mean.float(), posterior.logvar.float()).mean()
        terms = {"rec": rec, "kl": self.loss_config.kl_weight * kl}
        if self.foundation is not None:
            features = self.foundation(batch["image"])  # (B, D, g, g)
            if features.shape[-2:] != z.shape[-2:]:
                features = F.interpolate(features.float(), size=z.shape[-2:], mode="bilinear",
                                         align_corners=False)
            vf = self.vf_loss(self.projection(z), features)
            weight = adaptive_weight(rec, vf.total, self.vae.encoder_last_layer, self.vf_config.weight)
            terms["vf"] = weight * vf.total
            self.log_dict({"train/vf_weight": weight, "train/vf_cos": vf.cos.detach(),
                           "train/vf_distmat": vf.distmat.detach()}, on_step=True, on_epoch=False)
        if self.discriminator is not None:
            terms.update(self._adversarial(x, recon, rec))
        return terms

    def _adversarial(self, x: torch.Tensor, recon: torch.Tensor,
                     rec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both GAN terms in one loss: the generator's sees the discriminator through detached weights
        (so it trains only the autoencoder), the discriminator's sees detached reconstructions (so it
        trains only the discriminator); one optimiser then steps both."""
        from torch.func import functional_call

        active = float(self.global_step >= self.loss_config.disc_start)
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g = generator_loss(functional_call(self.discriminator, frozen, (recon,)))
        if active:
            weight = adaptive_weight(rec, g, self.vae.decoder_last_layer, 1.0, 1e4)
        else:
            weight = rec.new_zeros(())
        d = hinge_discriminator_loss(self.discriminator(x.detach()), self.discriminator(recon.detach()))
        scale = self.loss_config.disc_weight * active
        # At weight 0 before disc_start, so the discriminator's parameters still see a (zero) gradient.
        return {"gan": scale * weight * g, "disc": scale * d}

    # --- validation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> their reconstructions from the posterior mean, in [0, 1]."""
        recon, _, _ = self.vae(images * 2 - 1, labels if self.vae.num_classes else None, sample=False)
        return ((recon.float() + 1) / 2).clamp(0, 1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        recon = self.reconstruct(batch["image"], batch["label"])
        values = psnr(recon, batch["image"])
        self.log("val/psnr", values.mean(), on_epoch=True, batch_size=len(values), sync_dist=True)
        self.log("val/l1", (recon - batch["image"]).abs().mean(), on_epoch=True, batch_size=len(values),
                 sync_dist=True)
        if batch_idx == 0:
            self._preview = {"image": batch["image"][:16].cpu(), "recon": recon[:16].cpu()}

    def on_fit_end(self) -> None:
        if self._preview is not None and self.trainer.is_global_zero:
            from sensorium.recipes.doppler.report import write_image_grid

            pair = torch.stack([self._preview["image"], self._preview["recon"]])  # (2, N, C, H, W)
            write_image_grid(self.run_dir / "eval" / "vae_reconstructions.png", pair,
                             ["val image", "reconstruction"])


# --- stage 3: the DiT -----------------------------------------------------------------------------------
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
        x0 = self.normalise(batch["mean"])
        g = torch.Generator(device=x0.device).manual_seed(1000 + batch_idx)  # the same noise every epoch
        noise = torch.randn(x0.shape, generator=g, device=x0.device)
        t = (torch.arange(len(x0), device=x0.device) % 8 + 0.5) / 8  # a fixed grid of times
        pred = self.ema(interpolate(x0, noise, t), t, batch["label"])
        mse = (pred.float() - (noise - x0)).square().mean()
        self.log("val/velocity_mse", mse, on_epoch=True, batch_size=len(x0), sync_dist=True)

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



# --- loading a stage from its checkpoint ----------------------------------------------------------------
def file_digest(path: str | Path) -> str:
    """Content hash of a whole file (checkpoints: a few MB)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_STAGE_KEYS = {DopplerVAETask: ("image_size", "vae"), DopplerDiTTask: ("latent_shape", "DiT")}


def load_stage(path: str | Path | None, cls: type[DopplerVAETask] | type[DopplerDiTTask]):
    """A trained stage rebuilt from its checkpoint (weights_only), in eval mode. A missing file, a
    checkpoint of the other stage or of another recipe, or weights that do not fit the network its
    hyperparameters describe are errors naming the file: never a network with random weights."""
    from sensorium.engine.checkpoint import load_task

    key, name = _STAGE_KEYS[cls]
    if path is None:
        raise ConfigError("--ckpt", f"no {name} checkpoint given: train the stage first "
                                    "(`sensorium pipeline doppler`)")

    def built_for_use(hparams: dict) -> dict:
        if hparams.get(key) is None:
            other = "DiT" if "latent_shape" in hparams else "VAE" if "image_size" in hparams else "non-doppler"
            raise ConfigError(path, f"is a {other} checkpoint, not a trained doppler {name} checkpoint")
        if cls is not DopplerVAETask:
            return hparams
        # Extraction and sampling need the autoencoder only: the frozen encoder (maybe a DINOv2 in a
        # directory of the training machine), the VF projection and the discriminator are not built.
        return {**hparams, "vf": {**hparams["vf"], "weight": 0.0}, "loss": {**hparams["loss"], "disc_weight": 0.0}}

    training_only = ("foundation.", "projection.", "discriminator.") if cls is DopplerVAETask else ()
    return load_task(path, cls, built_for_use, training_only)

