import pytest
import torch
import torch.nn.functional as F

from sensorium.layers.attention import attention_dtype, masked_sdpa


def _qkv(d: int, dtype=torch.bfloat16, grad: bool = True):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, n, d, generator=g).to(dtype).requires_grad_(grad) for n in (5, 7, 7)]


@pytest.mark.parametrize("d, grad, expected", [(16, True, torch.float32), (32, True, torch.float32),
                                               (64, True, torch.bfloat16), (16, False, torch.bfloat16)])
def test_attention_dtype_upcasts_only_narrow_bf16_heads_that_need_a_backward(d, grad, expected):
    q, k, v = _qkv(d, grad=grad)
    assert attention_dtype(q, k, v) == expected
    with torch.no_grad():
        assert attention_dtype(q, k, v) == torch.bfloat16  # inference keeps bf16
    q32, k32, v32 = _qkv(d, torch.float32, grad)
    assert attention_dtype(q32, k32, v32) == torch.float32


def test_upcast_attention_under_autocast_matches_fp32_and_returns_bf16():
    """Under bf16 autocast the narrow-head path really computes in fp32 (autocast would otherwise
    recast the inputs to bf16), returns bf16 like the inputs, and passes gradients back."""
    q, k, v = _qkv(16)
    with torch.autocast("cpu", torch.bfloat16):
        out = masked_sdpa(q, k, v)
    assert out.dtype == torch.bfloat16
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert torch.allclose(out.float(), reference, atol=1e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_upcast_attention_keeps_the_key_mask():
    q, k, v = _qkv(16)
    mask = torch.tensor([[True] * 4 + [False] * 3, [False] * 7])
    out = masked_sdpa(q, k, v, mask)
    reference = masked_sdpa(q.float(), k.float(), v.float(), mask)
    assert torch.allclose(out.float(), reference, atol=1e-2)
    assert (out[1] == 0).all()  # a sample with no valid key attends to nothing
