"""The class-conditional KL-VAE: shapes per downsampling factor, and a condition that starts at zero."""

import pytest
import torch

from sensorium.models.vae import ConditionalVAE, PatchDiscriminator


@pytest.mark.parametrize("widths, factor", [((8, 16), 2), ((8, 8, 16, 16), 8)])
def test_latent_and_reconstruction_shapes(widths, factor):
    vae = ConditionalVAE(in_channels=3, widths=widths, z_channels=4, num_classes=5, cond_dim=16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, posterior, z = vae(x, torch.tensor([0, 4]))
    assert vae.downsample_factor == factor and vae.latent_shape((32, 32)) == (4, 32 // factor, 32 // factor)
    assert z.shape == posterior.mean.shape == (2, 4, 32 // factor, 32 // factor) and recon.shape == x.shape
    assert torch.isfinite(recon).all()


def test_the_condition_starts_at_zero_and_then_matters():
    torch.manual_seed(0)
    vae = ConditionalVAE(in_channels=1, widths=(8, 16), z_channels=2, num_classes=3, cond_dim=8)
    x = torch.rand(2, 1, 16, 16)
    a = vae.encode(x, torch.tensor([0, 0])).mean
    torch.testing.assert_close(a, vae.encode(x, torch.tensor([2, 1])).mean)  # zero-initialised condition
    for block in vae.modules():
        if getattr(block, "cond", None) is not None:
            torch.nn.init.normal_(block.cond.weight)
    assert not torch.allclose(a, vae.encode(x, torch.tensor([2, 1])).mean)
    with pytest.raises(ValueError, match="labels"):
        vae.encode(x)


def test_unconditional_vae_and_discriminator():
    vae = ConditionalVAE(in_channels=1, widths=(8, 8, 16, 16), z_channels=4)  # f8, no classes
    assert vae.class_embed is None and vae.latent_shape((64, 64)) == (4, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        vae.latent_shape((60, 64))
    logits = PatchDiscriminator(1, width=8, layers=2)(torch.rand(2, 1, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # a map of patch logits
