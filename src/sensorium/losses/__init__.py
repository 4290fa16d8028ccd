"""Losses: `nn.Module`s plus the public functions below (see DESIGN.md, "Public API").

Names resolve lazily (PEP 562) so `import sensorium.losses` stays cheap and each family lives in
its own module: contrastive (supcon, info_nce with negative masks, cross-rank gathering and a
negative queue), masked (mae_loss), sdf (cardiac SDF terms), kl (Gaussian KL), alignment (VA-VAE's
vision-foundation alignment), adversarial (hinge GAN terms).
"""

from importlib import import_module

_EXPORTS = {
    "supcon_loss": "contrastive",
    "SupConLoss": "contrastive",
    "info_nce": "contrastive",
    "gather_rows": "contrastive",
    "NegativeQueue": "contrastive",
    "mae_loss": "masked",
    "sdf_l1_loss": "sdf",
    "surface_loss": "sdf",
    "eikonal_loss": "sdf",
    "kl_loss": "sdf",
    "gaussian_kl": "kl",
    "kl_per_sample": "kl",
    "vf_loss": "alignment",
    "VFLoss": "alignment",
    "adaptive_weight": "alignment",
    "hinge_discriminator_loss": "adversarial",
    "generator_loss": "adversarial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
