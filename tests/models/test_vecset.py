"""The multi-class VecSet autoencoder: shapes and finiteness per configuration, FPS, the eikonal
double backward through the MATH SDPA kernel."""

from __future__ import annotations

import pytest
import torch

from sensorium.losses.sdf import eikonal_loss
from sensorium.models.vecset import (
    AttentionKind,
    LatentInit,
    VecSetAutoEncoder,
    farthest_point_sample,
    surface_input,
)

C = 10


def vecset_tiny(num_classes: int = 10, latent_init: LatentInit = "fps", kl_dim: int | None = None,
                attention: AttentionKind = "global") -> VecSetAutoEncoder:
    """A few thousand parameters."""
    return VecSetAutoEncoder(num_classes, dim=32, num_latents=8, depth=1, head_dim=16, num_freqs=4,
                             latent_init=latent_init, kl_dim=kl_dim, attention=attention, encoder_neighbours=8,
                             decoder_neighbours=4)


def _context(model, surface):
    encoding = model.encode(surface)
    return model.decode_context(encoding.latents, encoding.positions)


def _batch(B=2, N=64, Q=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(B, N, 3, generator=g) * 2 - 1
    labels = torch.randint(0, C, (B, N), generator=g)
    return surface_input(points, labels, C), torch.rand(B, Q, 3, generator=g) * 2 - 1


CONFIGS = [("learned", "global"), ("fps", "global"), ("fps", "local")]


@pytest.mark.parametrize("latent_init, attention", CONFIGS)
@pytest.mark.parametrize("kl_dim", [None, 4])
def test_output_shapes_and_finite(latent_init, attention, kl_dim):
    model = vecset_tiny(C, latent_init=latent_init, kl_dim=kl_dim, attention=attention)
    surface, queries = _batch()
    out = model(surface, queries)
    assert out.sdf.shape == (2, 48, C) and torch.isfinite(out.sdf).all()
    assert out.latents.shape == (2, model.num_latents, kl_dim or 32)
    if kl_dim:
        assert out.mean.shape == out.logvar.shape == (2, model.num_latents, kl_dim)
    else:
        assert out.mean is None and out.logvar is None
    out.sdf.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_zero_initialised_head_starts_every_structure_at_zero():
    surface, queries = _batch()
    assert vecset_tiny(C)(surface, queries).sdf.abs().max() == 0


@pytest.mark.parametrize("attention", ["global", "local"])
def test_stages_compose_and_chunks_decode_independently(attention):
    model = vecset_tiny(C, latent_init="fps", kl_dim=4, attention=attention).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    surface, queries = _batch()
    full = model(surface, queries).sdf
    context = _context(model, surface)
    first, rest = model.query_sdf(context, queries[:, :20]), model.query_sdf(context, queries[:, 20:])
    chunks = torch.cat([first, rest], dim=1)
    torch.testing.assert_close(chunks, full)  # eval: the bottleneck returns its mean, deterministic
    torch.testing.assert_close(model.query_sdf(context.select(1), queries[1:]), full[1:])


def test_local_latents_sit_on_their_fps_points_and_queries_read_only_their_nearest():
    model = vecset_tiny(C, latent_init="fps", attention="local").eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    surface, queries = _batch()
    encoding = model.encode(surface)
    idx = farthest_point_sample(surface[..., :3], model.num_latents)
    torch.testing.assert_close(encoding.positions, surface[..., :3].gather(1, idx[..., None].expand(-1, -1, 3)))
    context = _context(model, surface)
    sdf = model.query_sdf(context, queries[:, :1])  # the first query of each shape
    distance = (context.positions - queries[:, :1]).norm(dim=-1)  # (B, M)
    far = distance > distance.topk(model.decoder_neighbours, dim=1, largest=False).values[:, -1:]
    noise = torch.randn(context.tokens.shape, generator=torch.Generator().manual_seed(3))
    moved = context._replace(tokens=context.tokens + noise * far[..., None])  # change every latent it does not read
    torch.testing.assert_close(model.query_sdf(moved, queries[:, :1]), sdf)
    nearest = context._replace(tokens=context.tokens + noise * (~far)[..., None])
    assert not torch.allclose(model.query_sdf(nearest, queries[:, :1]), sdf)
    with pytest.raises(ValueError, match="positions"):
        model.decode_context(encoding.latents)


def test_sdf_scale_scales_the_output_and_its_gradient():
    """The head works in units of sdf_scale: same weights, outputs and spatial gradients scaled."""
    plain = vecset_tiny(C).eval()
    torch.nn.init.normal_(plain.head.weight, std=0.1)
    scaled = vecset_tiny(C).eval()
    scaled.load_state_dict(plain.state_dict())
    scaled.sdf_scale = 0.1
    surface, queries = _batch()
    torch.testing.assert_close(scaled(surface, queries).sdf, 0.1 * plain(surface, queries).sdf)
    context = plain.decode_context(plain.encode(surface).latents)
    _, grad = plain.sdf_with_gradient(context, queries, torch.zeros(2, 48, dtype=torch.long))
    _, grad_scaled = scaled.sdf_with_gradient(context, queries, torch.zeros(2, 48, dtype=torch.long))
    torch.testing.assert_close(grad_scaled, 0.1 * grad)
    with pytest.raises(ValueError, match="sdf_scale"):
        VecSetAutoEncoder(C, dim=32, head_dim=16, sdf_scale=0.0)


def test_fps_latents_depend_on_the_input_points_learned_do_not():
    surface, _ = _batch()
    fps = vecset_tiny(C, latent_init="fps")
    learned = vecset_tiny(C, latent_init="learned")
    moved = surface.clone()
    moved[..., :3] = moved[..., :3] * 0.5
    assert not torch.allclose(fps.encode(surface).latents, fps.encode(moved).latents)
    assert learned.latent_queries is not None and fps.latent_queries is None


def _fps_reference(points: torch.Tensor, m: int) -> list[int]:
    first = int((points - points.mean(0)).square().sum(-1).argmax())
    chosen = [first]
    for _ in range(m - 1):
        d = torch.cdist(points, points[chosen]).min(dim=1).values
        chosen.append(int(d.argmax()))
    return chosen


def test_farthest_point_sample_matches_the_greedy_definition():
    points = torch.rand(3, 200, 3, generator=torch.Generator().manual_seed(1))
    idx = farthest_point_sample(points, 17)
    assert idx.shape == (3, 17)
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(points[b], 17)
        assert len(set(idx[b].tolist())) == 17


def test_farthest_point_sample_spreads_out():
    # Two tight clusters: FPS picks from both before refining either.
    g = torch.Generator().manual_seed(2)
    big = torch.randn(1, 500, 3, generator=g) * 0.01
    points = torch.cat([big, torch.randn(1, 5, 3, generator=g) * 0.01 + 5], dim=1)
    idx = farthest_point_sample(points, 2)[0]
    assert {int(i) >= 500 for i in idx} == {True, False}
    with pytest.raises(ValueError, match="cannot pick"):
        farthest_point_sample(points, 1000)


@pytest.mark.parametrize("attention", ["global", "local"])
def test_eikonal_double_backward_through_math_kernel(attention):
    model = vecset_tiny(C, latent_init="fps", attention=attention)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a non-flat field, so the gradient is non-trivial
    surface, queries = _batch()
    context = _context(model, surface)
    channels = torch.randint(0, C, queries.shape[:2])
    sdf, grad = model.sdf_with_gradient(context, queries, channels)
    assert sdf.shape == (2, 48, C) and grad.shape == (2, 48, 3)
    loss = eikonal_loss(grad)
    loss.backward()  # gradient of a gradient: needs the MATH SDPA kernel in the decoder
    # Reaches the decoder's attention and, through the context, the encoder and the latent blocks.
    attn = (lambda block: block) if attention == "local" else (lambda block: block.attn)
    for module in (attn(model.decoder).q, model.blocks[0].attn.qkv, attn(model.encoder).kv):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
        assert torch.isfinite(module.weight.grad).all()


@pytest.mark.parametrize("latent_init, attention", [("learned", "global"), ("fps", "local")])
def test_gradient_matches_finite_differences_and_channel_selection(latent_init, attention):
    # Local: the nearest latents change only where a query crosses a Voronoi boundary, which
    # steps of 1e-6 around random points do not.
    model = vecset_tiny(C, latent_init=latent_init, attention=attention).double().eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    surface, queries = _batch(B=1, Q=5)
    surface, queries = surface.double(), queries.double()
    context = _context(model, surface)
    _, all_grads = model.sdf_with_gradient(context, queries)  # (1, 5, C, 3)
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        fd = (model.query_sdf(context, queries + step) - model.query_sdf(context, queries - step)) / (2 * eps)
        torch.testing.assert_close(all_grads[..., axis], fd, atol=1e-6, rtol=1e-5)
    channels = torch.tensor([[0, 3, 9, 9, 1]])
    _, chosen = model.sdf_with_gradient(context, queries, channels)
    torch.testing.assert_close(chosen, all_grads[0, torch.arange(5), channels[0]][None])


def test_invalid_configuration():
    with pytest.raises(ValueError, match="latent_init"):
        VecSetAutoEncoder(latent_init="random")  # no silent fallback to random sampling
    with pytest.raises(ValueError, match="head_dim"):
        VecSetAutoEncoder(dim=100, head_dim=64)
    with pytest.raises(ValueError, match="local attention needs latent_init 'fps'"):
        VecSetAutoEncoder(latent_init="learned", attention="local")
    with pytest.raises(ValueError, match="attention"):
        VecSetAutoEncoder(attention="sparse")
    with pytest.raises(ValueError, match="decoder_neighbours"):
        VecSetAutoEncoder(num_latents=8, attention="local", decoder_neighbours=9)


def test_the_log_says_which_latent_queries(caplog):
    with caplog.at_level("INFO", logger="sensorium.models.vecset"):
        vecset_tiny(C, latent_init="fps")
        vecset_tiny(C, latent_init="learned", kl_dim=4)
        vecset_tiny(C, latent_init="fps", attention="local")
    assert "8 latents from farthest-point samples of the input surface, global attention, no bottleneck" in caplog.text
    assert "8 latents from learned query vectors, global attention, KL bottleneck of 4" in caplog.text
    assert ("local attention (8 nearest points per latent, 4 nearest latents per query), no bottleneck"
            in caplog.text)
