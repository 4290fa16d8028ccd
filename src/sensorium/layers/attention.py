"""Self- and cross-attention through `scaled_dot_product_attention`, and the pre-norm blocks
built from them (ViT / Perceiver style).

Masks follow one convention everywhere: a boolean `key_mask` of shape (B, N_kv) with True where a
key may be attended to. A query whose keys are all masked attends to nothing: its attention output
is zero (instead of the NaN a softmax over an empty set would give).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.layers.mlp import Mlp
from sensorium.layers.rope import apply_rope


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, N, C = x.shape
    return x.view(B, N, num_heads, C // num_heads).transpose(1, 2)  # (B, heads, N, d)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)  # (B, N, C)


CPU_BF16_MAX_HEAD_DIM_FP32 = 32
"""Heads this narrow or narrower run attention in fp32 on CPU when a backward pass follows (see
`attention_dtype`)."""


def attention_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.dtype:
    """The dtype SDPA runs in for these (B, heads, N, d) inputs.

    The inputs' own, except under bf16 on CPU with narrow heads (d <= 32) and autograd on: there
    PyTorch's CPU flash-attention backward in bf16 measured 2-8x slower than in fp32 for sequences
    of 64-1024 tokens (`python benchmarks/cpu_attention.py`), and attention took 80% of a cardiac
    demo step. Wider heads and long sequences gain from bf16, and so does every forward pass; they
    keep it. The projections around attention stay in bf16 either way.
    """
    needs_backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-1] <= CPU_BF16_MAX_HEAD_DIM_FP32
            and needs_backward):
        return torch.float32
    return q.dtype


def masked_sdpa(q, k, v, key_mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """SDPA over (B, heads, N, d) tensors with an optional (B, N_kv) key mask (True = keep).
    The result has q's dtype; the computation runs in `attention_dtype(q, k, v)`."""
    dtype = attention_dtype(q, k, v)
    if dtype != q.dtype:
        # Autocast would cast the inputs straight back to bf16: off for this call only.
        with torch.autocast(q.device.type, enabled=False):
            return masked_sdpa(q.to(dtype), k.to(dtype), v.to(dtype), key_mask, dropout_p).to(q.dtype)
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, N_kv), broadcast over heads and queries
    # A row with no valid key would softmax over -inf only; let it attend to everything and zero
    # its output afterwards, so gradients stay finite.
    has_key = key_mask.any(dim=1)  # (B,)
    attn_mask = attn_mask | ~has_key[:, None, None, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    return out * has_key[:, None, None, None].to(out.dtype)


class Attention(nn.Module):
    """Multi-head self-attention.

    qk_norm: RMS-normalise queries and keys per head before the dot product (QK-norm, Dehghani et
    al. 2023; LightningDiT): attention logits stay bounded, which keeps large or bf16 models stable.
    A `rope` (cos, sin) pair from `sensorium.layers.rope` rotates queries and keys by position.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        head_dim = dim // num_heads
        self.qk_norm = qk_norm
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        if self.qk_norm:  # in fp32: stabler, and bf16 input with an fp32 gain has no fused kernel
            q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = masked_sdpa(q, k, v, key_mask, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(_merge_heads(out)))  # (B, N, C)


class CrossAttention(nn.Module):
    """Multi-head attention of queries `x` (B, Nq, dim) over a context (B, Nkv, context_dim)."""

    def __init__(self, dim: int, context_dim: int | None = None, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, M, C = context.shape[0], context.shape[1], self.q.out_features
        q = _split_heads(self.q(x), self.num_heads)  # (B, heads, Nq, d)
        kv = self.kv(context).view(B, M, 2, self.num_heads, C // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, heads, Nkv, d)
        out = masked_sdpa(q, k, v, key_mask, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(_merge_heads(out)))  # (B, Nq, C)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 dropout: float = 0.0, norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention block (Perceiver / VecSet): x + CrossAttn(LN(x), LN(ctx)), then MLP."""

    def __init__(self, dim: int, context_dim: int | None = None, num_heads: int = 8, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, dropout: float = 0.0, norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        context_dim = context_dim or dim
        self.norm_q = norm_layer(dim)
        self.norm_ctx = norm_layer(context_dim)
        self.attn = CrossAttention(dim, context_dim, num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_ctx(context), key_mask)
        return x + self.mlp(self.norm2(x))
