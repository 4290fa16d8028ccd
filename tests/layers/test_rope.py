import torch

from sensorium.layers.attention import Attention
from sensorium.layers.rope import apply_rope, rope_2d


def test_rotary_scores_depend_only_on_the_offset_between_positions():
    """q.k after RoPE is a function of the offset: the same pair of vectors at (0, 0)-(1, 2) and at
    (2, 1)-(3, 3) scores the same; it also keeps norms."""
    cos, sin = rope_2d(8, 4, 4)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    tokens = torch.zeros(1, 1, 16, 8)
    tokens[..., :, :] = q
    rq = apply_rope(tokens, cos, sin)[0, 0]
    tokens[..., :, :] = k
    rk = apply_rope(tokens, cos, sin)[0, 0]

    def at(r, c):
        return r * 4 + c

    torch.testing.assert_close(rq[at(0, 0)] @ rk[at(1, 2)], rq[at(2, 1)] @ rk[at(3, 3)])
    assert not torch.allclose(rq[at(0, 0)] @ rk[at(1, 2)], rq[at(0, 0)] @ rk[at(2, 1)])
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(16))


def test_qk_norm_and_rope_in_attention_keep_shapes():
    attention = Attention(16, num_heads=2, qk_norm=True)
    x = torch.randn(2, 9, 16)
    out = attention(x, rope=rope_2d(8, 3, 3))
    assert out.shape == x.shape and torch.isfinite(out).all()
