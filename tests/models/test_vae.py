"""The class-conditional KL-VAE: shapes per downsampling factor, a condition that starts at zero, and
LDM's AutoencoderKL layout, so a released VA-VAE loads and its conditioned copy starts as it."""

import pytest
import torch

from sensorium.models.vae import ConditionalVAE, PatchDiscriminator, autoencoder_state


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


# --- LDM AutoencoderKL layout (LightningDiT's VA-VAE tokenizer) ---------------------------------------
def ldm_autoencoder_shapes(ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                           attn_levels: tuple[int, ...], z_channels: int,
                           in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Every tensor of LDM's AutoencoderKL (double_z, embed_dim = z_channels) and its shape, written
    from LDM's layout: the names a released checkpoint holds."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{proj}", c, c, 1)

    widths = [ch * m for m in ch_mult]
    conv("encoder.conv_in", in_channels, ch, 3)
    cin = ch
    for i, w in enumerate(widths):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", cin, w)
            cin = w
            if i in attn_levels:
                attn(f"encoder.down.{i}.attn.{j}", w)
        if i < len(widths) - 1:
            conv(f"encoder.down.{i}.downsample.conv", w, w, 3)
    for part in ("encoder", "decoder"):
        resnet(f"{part}.mid.block_1", widths[-1], widths[-1])
        attn(f"{part}.mid.attn_1", widths[-1])
        resnet(f"{part}.mid.block_2", widths[-1], widths[-1])
    norm("encoder.norm_out", widths[-1]), conv("encoder.conv_out", widths[-1], 2 * z_channels, 3)
    conv("quant_conv", 2 * z_channels, 2 * z_channels, 1), conv("post_quant_conv", z_channels, z_channels, 1)
    conv("decoder.conv_in", z_channels, widths[-1], 3)
    cin = widths[-1]
    for i in reversed(range(len(widths))):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, widths[i])
            cin = widths[i]
            if i in attn_levels:
                attn(f"decoder.up.{i}.attn.{j}", widths[i])
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", widths[i], widths[i], 3)
    norm("decoder.norm_out", ch), conv("decoder.conv_out", ch, in_channels, 3)
    return shapes


def test_the_f16d32_network_has_the_released_va_vae_layout():
    """LightningDiT's tokenizer: ch 128, ch_mult (1, 1, 2, 2, 4), 2 blocks, attention at its 16x16
    level (attn_resolutions [16] at 256 px), z 32: 342 tensors, 69,836,067 parameters."""
    with torch.device("meta"):  # the shapes only, no memory
        vae = ConditionalVAE(3, (128, 128, 256, 256, 512), 32, 2, num_classes=31, cond_dim=256,
                             attn_levels=(4,), quant_conv=True)
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items() if k not in vae.conditioning_keys()}
    assert ours == ldm_autoencoder_shapes(128, (1, 1, 2, 2, 4), 2, (4,), 32)
    assert len(ours) == 342 and sum(torch.Size(s).numel() for s in ours.values()) == 69_836_067
    assert vae.latent_shape((256, 256)) == (32, 16, 16)
    assert {k.split(".")[0] for k in vae.conditioning_keys()} == {"class_embed", "encoder", "decoder"}


def _released(**net):
    """A random unconditioned autoencoder standing for a released one, and a conditioned copy of its
    architecture (other random weights)."""
    torch.manual_seed(0)
    net = {"in_channels": 3, "widths": (8, 16), "z_channels": 4, "num_res_blocks": 1, "attn_levels": (1,),
           "quant_conv": True, **net}
    released = ConditionalVAE(**net).eval()
    for p in released.parameters():  # away from PyTorch's init, so a layer left unloaded shows
        p.data.add_(torch.randn_like(p) * 0.1)
    return released, ConditionalVAE(**net, num_classes=3, cond_dim=8).eval()


def test_a_loaded_autoencoder_with_its_zero_conditioning_reconstructs_exactly_as_the_released_one():
    released, vae = _released()
    vae.load_autoencoder(autoencoder_state(released.state_dict()))
    x, z = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 4, 8, 8)
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        a, b = released.encode(x), vae.encode(x, labels)
        assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)  # bit for bit
        assert torch.equal(released.decode(z), vae.decode(z, labels))
        assert torch.equal(released(x, sample=False)[0], vae(x, labels, sample=False)[0])
    for block in vae.modules():  # the conditioning is still there to learn: once it moves, it matters
        if getattr(block, "cond", None) is not None:
            torch.nn.init.normal_(block.cond.weight)
    with torch.no_grad():
        assert not torch.allclose(released.decode(z), vae.decode(z, labels))


def test_autoencoder_state_strips_wrappers_and_leaves_out_training_only_tensors():
    released, vae = _released()
    state = released.state_dict()
    extra = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.zeros(2),
             "foundation_model.model.cls_token": torch.zeros(1),
             "linear_proj.weight": torch.zeros(3, 4, 1, 1)}
    for prefix in ("", "model.", "module."):
        wrapped = {f"{prefix}{k}": v for k, v in {**state, **extra}.items()}
        assert autoencoder_state(wrapped).keys() == state.keys()
    vae.load_autoencoder(autoencoder_state({f"model.{k}": v for k, v in {**state, **extra}.items()}))
    assert torch.equal(vae.decoder.up[1].attn[0].q.weight, released.decoder.up[1].attn[0].q.weight)


def test_an_autoencoder_that_does_not_fit_is_one_error_naming_the_keys_and_loads_nothing():
    released, vae = _released()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    state = released.state_dict()
    missing = {k: v for k, v in state.items() if k != "post_quant_conv.bias"}
    with pytest.raises(ValueError, match=r"missing \['post_quant_conv.bias'\], unexpected \[\]"):
        vae.load_autoencoder(missing)
    wrong = {**state, "encoder.conv_in.weight": torch.zeros(8, 1, 3, 3)}
    with pytest.raises(ValueError, match=r"conv_in.weight \(8, 1, 3, 3\) \(the network's: \(8, 3, 3, 3\)\)"):
        vae.load_autoencoder(wrong)
    with pytest.raises(ValueError, match=r"unexpected \['decoder.up.0.attn.0.q.weight'"):
        vae.load_autoencoder({**state, "decoder.up.0.attn.0.q.weight": torch.zeros(8, 8, 1, 1)})
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
