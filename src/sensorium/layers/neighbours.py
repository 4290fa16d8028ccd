"""Attention over each query's k nearest points, with their offsets as relative positions.

A query at position x attends only to the k points p_j nearest to it, and sees each one's token
together with a Fourier embedding of its offset p_j - x. This is the local counterpart of
`sensorium.layers.attention.CrossAttentionBlock`: the network reads geometry in coordinates
relative to the query, so what it learns at one place of a shape holds at every other place and on
every other shape (the inductive bias of point convolutions and of 3DILG, Zhang et al., NeurIPS
2022, the predecessor of 3DShape2VecSet). Used by the VecSet autoencoder's `attention: local`.

Conventions: points (B, N, 3), queries (B, Q, 3); neighbour indices (B, Q, k) index the N points of
the same shape; offsets are neighbour minus query.

Attention over k <= 32 keys per query is written with einsums over the gathered neighbours instead
of SDPA: SDPA would see B * Q batches of one query each, where its per-call overhead dominates.
"""

from __future__ import annotations

import torch
from torch import nn

from sensorium.layers.mlp import Mlp
from sensorium.layers.pos_embed import PointFourierEmbed


@torch.no_grad()
def knn_indices(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, Q, k) indices of the k points (B, N, 3) nearest to each query (B, Q, 3), nearest first.

    Exact, by a dense distance matrix (B, Q, N): fine for the few hundred to few thousand points of
    a latent set or an input cloud; chunk the queries for more.
    """
    if not 0 < k <= points.shape[1]:
        raise ValueError(f"cannot pick {k} nearest of {points.shape[1]} points")
    distances = torch.cdist(queries.float(), points.float())  # (B, Q, N)
    return distances.topk(k, dim=-1, largest=False).indices


def gather_neighbours(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of x (B, N, D) at index (B, Q, k) -> (B, Q, k, D).

    One `index_select` on the flattened rows: `torch.gather` would need the index expanded to D
    channels (a B x Q x k x D int64 tensor), which cost more than the attention itself here.
    """
    B, N, D = x.shape
    flat = (index + torch.arange(B, device=index.device)[:, None, None] * N).reshape(-1)  # (B * Q * k,)
    return x.reshape(B * N, D).index_select(0, flat).view(*index.shape, D)


def neighbourhood(queries: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k points (B, N, 3) nearest to each query (B, Q, 3): their indices (B, Q, k) and their
    offsets from the query (B, Q, k, 3), differentiable with respect to both positions."""
    index = knn_indices(queries, points, k)
    return index, gather_neighbours(points, index) - queries[:, :, None]


class NeighbourCrossAttentionBlock(nn.Module):
    """Pre-norm block: queries attend to their k nearest tokens, then an MLP.

        keys, values = W_kv LN(token_j) + W_rel PE(s * (p_j - x))     for the k neighbours j of x
        x = x + Attn(LN(x), keys, values);  x = x + MLP(LN(x))

    Args:
        dim: width of queries and tokens.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to dim.
        rel_freqs: Fourier frequencies of the offset embedding (2^0..2^(F-1) times pi).
        rel_scale: offsets are multiplied by this before the embedding, so that neighbourhoods a
            few tenths of a unit wide span the embedding's frequencies.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, rel_freqs: int = 4, rel_scale: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.rel_scale = rel_scale
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.rel = PointFourierEmbed(3, 2 * dim, num_freqs=rel_freqs, fourier_dims=3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        """x (B, Q, dim) queries; tokens (B, N, dim); index (B, Q, k) into tokens; offsets
        (B, Q, k, 3) neighbour position minus query position. Returns (B, Q, dim)."""
        B, Q, k = index.shape
        N, H, d = tokens.shape[1], self.num_heads, x.shape[-1] // self.num_heads
        # The relative term W_rel PE + b is linear in the offsets' F Fourier features, so it is
        # applied on the F-wide side instead of building (B, Q, k, 2 * dim) key / value tensors:
        #   q . (W_k PE_j + b_k)        = (W_k^T q) . PE_j + const   (the constant cancels in the softmax)
        #   sum_j a_j (W_v PE_j + b_v)  = W_v (sum_j a_j PE_j) + b_v  (the weights sum to one)
        # The same function as adding it to every neighbour's key and value (tests check it), and
        # cheaper: the cardiac demo's encoder block (16 shapes x 256 latents x 16 neighbours, bf16,
        # forward + backward, 2 threads) took 123-127 ms instead of 203-330 ms.
        # Project every token once, then gather: k times fewer rows through the linear layer.
        keys, values = self.kv(self.norm_kv(tokens)).view(B, N, 2, H * d).unbind(2)  # each (B, N, dim)
        keys = gather_neighbours(keys, index).view(B, Q, k, H, d)
        values = gather_neighbours(values, index).view(B, Q, k, H, d)
        rel_keys, rel_values = self.rel.proj.weight.view(2, H, d, -1).unbind(0)  # each (H, d, F)
        rel_value_bias = self.rel.proj.bias.view(2, H, d)[1]
        q = self.q(self.norm_q(x)).view(B, Q, H, d) * d**-0.5  # (B, Q, H, d)
        features = self.rel.features(offsets * self.rel_scale).to(q.dtype)  # (B, Q, k, F)
        rel_queries = torch.einsum("bqhd,hdf->bqhf", q, rel_keys.to(q.dtype))  # W_k^T q
        logits = (torch.einsum("bqhd,bqkhd->bqkh", q, keys)
                  + torch.einsum("bqhf,bqkf->bqkh", rel_queries, features))  # (B, Q, k, H)
        # Softmax over the neighbours in at least fp32 (bf16 under autocast would round the weights).
        weights = logits.softmax(dim=2, dtype=torch.promote_types(logits.dtype, torch.float32)).to(values.dtype)
        pooled_features = torch.einsum("bqkh,bqkf->bqhf", weights, features.to(weights.dtype))
        out = (torch.einsum("bqkh,bqkhd->bqhd", weights, values)
               + torch.einsum("bqhf,hdf->bqhd", pooled_features, rel_values.to(weights.dtype))
               + rel_value_bias.to(weights.dtype))  # (B, Q, H, d)
        x = x + self.proj(out.reshape(B, Q, H * d))
        return x + self.mlp(self.norm2(x))
