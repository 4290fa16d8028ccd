"""Stage 1 of the doppler recipe, `DopplerVAETask`: a user-conditioned KL-VAE
(`sensorium.models.vae`) trained with
    rec   = sum over pixels of |x - x_hat|, averaged over the batch (LDM's reduction)
    kl    = kl_weight (1e-6) x the posterior's KL, summed over latent entries, averaged over the batch
    vf    = w x VF(proj(z), f(x)): VA-VAE's alignment of a 1x1 projection of the latent with a frozen
            encoder's patch features (`sensorium.losses.alignment`), w = vf_weight x the ratio of the
            gradient norms of rec and VF at the encoder's last layer
    gan   = optional: a patch discriminator's hinge terms after `disc_start` steps, weighted
            adaptively at the decoder's last layer (LDM)
Validation: PSNR of val reconstructions (posterior mean, `metrics.psnr`), which picks best.ckpt.
Stage 3, the DiT, is `dit_task.py`; `stages.load_stage` loads either from its checkpoint.

`init_from` starts the autoencoder from a pretrained LDM AutoencoderKL, such as LightningDiT's released
VA-VAE (the doppler note fine-tunes it with user conditioning): its tensors load under their own names
(`sensorium.models.vae.autoencoder_state`), the user conditioning starts at zero, so the first step's
model reconstructs exactly as the released one, and the fine-tune learns what each user adds.

The task builds its network when it first sees its data (`configure_data`, from the datamodule's
spec): the users, the image size and the channels come from the data, and are written into the
hyperparameters, so a checkpoint rebuilds exactly the network it holds.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.config import as_config
from sensorium.engine.checkpoint import load_checkpoint
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError, DataError
from sensorium.losses.adversarial import generator_loss, hinge_discriminator_loss
from sensorium.losses.alignment import VFLoss, adaptive_weight
from sensorium.losses.kl import kl_per_sample
from sensorium.models.vae import ConditionalVAE, PatchDiscriminator, autoencoder_state
from sensorium.recipes.doppler.datamodule import DopplerImageSpec
from sensorium.recipes.doppler.figures import write_image_grid
from sensorium.recipes.doppler.foundation import build_foundation
from sensorium.recipes.doppler.metrics import psnr
from sensorium.recipes.doppler.reader import from_signed, to_signed

log = logging.getLogger(__name__)


@dataclass
class VAENetConfig:
    """`sensorium.models.vae.ConditionalVAE`'s sizes; the defaults are the demo's (f4, 4 channels)."""

    widths: tuple[int, ...] = (16, 32, 64)
    z_channels: int = 4
    num_res_blocks: int = 1
    cond_dim: int = 64
    mid_attention: bool = True
    attn_levels: tuple[int, ...] = ()
    """Levels (0: full resolution) with self-attention after every residual block (LDM's
    attn_resolutions; the released VA-VAE: [4])."""
    quant_conv: bool = False
    """LDM's 1x1 convolutions around the latent (quant_conv, post_quant_conv); a pretrained
    AutoencoderKL has them."""
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


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pretrained autoencoder's file: a .safetensors file, or a torch file (read with
    weights_only=True) holding a state dict or a checkpoint with one under "state_dict" (LDM, Lightning)."""
    if not path.is_file():
        raise ConfigError(path, "no such checkpoint (model.init_args.init_from)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else load_checkpoint(path)
    except (pickle.UnpicklingError, EOFError, RuntimeError, SafetensorError) as e:  # not a file we can trust
        raise DataError(path, f"cannot read as a checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(path, "holds no state dict of tensors (at its top level or under 'state_dict')")
    return state


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
                 optim: OptimConfig | dict | None = None, init_from: str | None = None):
        """users, image_size, channels: filled from the data when the run starts (leave them unset).

        init_from: a pretrained LDM AutoencoderKL / VA-VAE checkpoint (.pt, .ckpt, .safetensors) whose
        layout `net` describes; read when the network is first built from the data (a fit, or a
        validate that measures the released model), never when a checkpoint of this task is restored."""
        super().__init__(optim)
        self.init_from = init_from
        self.net_config = as_config(VAENetConfig, net)
        self.loss_config = as_config(VAELossConfig, loss)
        self.vf_config = as_config(VFConfig, vf)
        self.save_config(net=self.net_config, loss=self.loss_config, vf=self.vf_config, users=users,
                         image_size=image_size, channels=channels, optim=self.optim, init_from=init_from)
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
            if self.init_from is not None:
                self._load_pretrained(Path(self.init_from))
            return
        expected = (list(self.hparams["users"]), self.hparams["image_size"], self.hparams["channels"])
        if expected != found:
            raise DataError(spec.root, f"the data's users, image size and channels {found} differ from the model's "
                                       f"{expected}")

    def _build(self, users: list[int], image_size: int, channels: int) -> None:
        self.hparams.update(users=users, image_size=image_size, channels=channels)
        n = self.net_config
        self.vae = ConditionalVAE(channels, tuple(n.widths), n.z_channels, n.num_res_blocks,
                                  len(users) if n.conditional else None, n.cond_dim, n.mid_attention,
                                  tuple(n.attn_levels), n.quant_conv)
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

    def _load_pretrained(self, path: Path) -> None:
        """The autoencoder's weights from `init_from`; its conditioning keeps its zero start."""
        state = autoencoder_state(read_state_dict(path))
        try:
            self.vae.load_autoencoder(state)
        except ValueError as e:
            raise ConfigError(path, f"weights do not fit the VAE that model.init_args.net describes: "
                                    f"{e}") from None
        log.info(f"[doppler] autoencoder loaded from {path}; the user conditioning starts at zero")

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
        x = to_signed(batch["image"])  # (B, C, H, W) in [-1, 1]
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
        recon, _, _ = self.vae(to_signed(images), labels if self.vae.num_classes else None, sample=False)
        return from_signed(recon.float()).clamp(0, 1)

    def _score(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        recon = self.reconstruct(batch["image"], batch["label"])
        values = psnr(recon, batch["image"])
        self.log(f"{split}/psnr", values.mean(), on_epoch=True, batch_size=len(values), sync_dist=True)
        self.log(f"{split}/l1", (recon - batch["image"]).abs().mean(), on_epoch=True, batch_size=len(values),
                 sync_dist=True)
        return recon

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        recon = self._score(batch, "val")
        if batch_idx == 0:
            self._preview = {"image": batch["image"][:16].cpu(), "recon": recon[:16].cpu()}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, "test")  # `sensorium test`: reports on TEST, chooses nothing

    def on_fit_end(self) -> None:
        if self._preview is not None and self.trainer.is_global_zero:
            pair = torch.stack([self._preview["image"], self._preview["recon"]])  # (2, N, C, H, W)
            write_image_grid(self.run_dir / "eval" / "vae_reconstructions.png", pair,
                             ["val image", "reconstruction"])
