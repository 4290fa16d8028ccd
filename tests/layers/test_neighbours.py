import pytest
import torch

from sensorium.layers.neighbours import (
    NeighbourCrossAttentionBlock,
    gather_neighbours,
    knn_indices,
    neighbourhood,
)


def _cloud(B=2, N=40, Q=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, Q, 3, generator=g), torch.rand(B, N, 3, generator=g)


def test_knn_indices_are_the_nearest_points_nearest_first():
    queries, points = _cloud()
    index = knn_indices(queries, points, 5)
    assert index.shape == (2, 7, 5)
    for b in range(2):
        for q in range(7):
            distances = (points[b] - queries[b, q]).norm(dim=-1)
            assert index[b, q].tolist() == distances.argsort()[:5].tolist()
    with pytest.raises(ValueError, match="nearest"):
        knn_indices(queries, points, 41)


def test_gather_neighbours_picks_rows_of_the_same_shape():
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    index = torch.tensor([[[0, 5]], [[1, 1]]])  # (B=2, Q=1, k=2)
    out = gather_neighbours(x, index)
    assert out.shape == (2, 1, 2, 3)
    torch.testing.assert_close(out[0, 0], x[0, [0, 5]])
    torch.testing.assert_close(out[1, 0], x[1, [1, 1]])  # shape 1's rows, not shape 0's


def _block_inputs(seed=0):
    queries, points = _cloud(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randn(2, points.shape[1], 32, generator=g)
    x = torch.randn(2, queries.shape[1], 32, generator=g)
    index, offsets = neighbourhood(queries, points, 6)
    torch.testing.assert_close(index, knn_indices(queries, points, 6))
    torch.testing.assert_close(queries[:, :, None] + offsets, gather_neighbours(points, index))
    return x, tokens, index, offsets


def test_block_reads_only_the_neighbours_it_is_given():
    torch.manual_seed(0)
    block = NeighbourCrossAttentionBlock(32, num_heads=4).eval()
    x, tokens, index, offsets = _block_inputs()
    out = block(x, tokens, index, offsets)
    assert out.shape == x.shape and torch.isfinite(out).all()
    unused = torch.ones(tokens.shape[:2], dtype=torch.bool)
    for b in range(2):
        unused[b, index[b].flatten()] = False
    noise = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(5))
    changed = tokens + noise * unused[..., None]  # change every token no query reads
    torch.testing.assert_close(block(x, changed, index, offsets), out)
    used = tokens.clone()
    used[0, index[0, 0, 0]] += noise[0, 0]  # the nearest token of query 0 of shape 0
    assert not torch.allclose(block(x, used, index, offsets)[0, 0], out[0, 0])


def test_block_depends_on_the_offsets_and_passes_gradients_to_them():
    torch.manual_seed(0)
    block = NeighbourCrossAttentionBlock(32, num_heads=4)
    x, tokens, index, offsets = _block_inputs()
    offsets.requires_grad_(True)
    out = block(x, tokens, index, offsets)
    (grad,) = torch.autograd.grad(out.square().sum(), offsets)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="divisible"):
        NeighbourCrossAttentionBlock(30, num_heads=4)


def _block_by_definition(block: NeighbourCrossAttentionBlock, x, tokens, index, offsets):
    """The block's docstring formula written out: the relative embedding added to every
    neighbour's key and value, softmax over the neighbours."""
    B, Q, k = index.shape
    H = block.num_heads
    d = x.shape[-1] // H
    kv = gather_neighbours(block.kv(block.norm_kv(tokens)), index) + block.rel(offsets * block.rel_scale)
    keys, values = kv.view(B, Q, k, 2, H, d).unbind(3)  # (B, Q, k, H, d)
    q = block.q(block.norm_q(x)).view(B, Q, 1, H, d) * d**-0.5
    weights = (q * keys).sum(-1).softmax(dim=2)  # (B, Q, k, H)
    out = x + block.proj((weights[..., None] * values).sum(2).reshape(B, Q, H * d))
    return out + block.mlp(block.norm2(out))


def test_block_equals_adding_the_relative_embedding_to_every_key_and_value():
    # The block applies the relative term on the Fourier-feature side (cheaper); it must stay the
    # same function, biases included, and the same gradients.
    torch.manual_seed(0)
    block = NeighbourCrossAttentionBlock(32, num_heads=4).double()
    torch.nn.init.normal_(block.rel.proj.bias)  # a non-zero key and value bias
    x, tokens, index, offsets = (t.double() if t.is_floating_point() else t for t in _block_inputs(seed=3))
    offsets.requires_grad_(True)
    out = block(x, tokens, index, offsets)
    expected = _block_by_definition(block, x, tokens, index, offsets)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.square().sum(), offsets)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), offsets)
    torch.testing.assert_close(grad, expected_grad)
