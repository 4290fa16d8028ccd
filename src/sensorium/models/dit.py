"""A diffusion transformer on latent images (DiT, Peebles & Xie 2023; LightningDiT's options).

    latent (B, C, H, W) --patchify--> tokens (B, N, dim) + positions
    condition c = embed(t) + embed(class)            (class dropped to a null class with prob p)
    N x block: x += gate * Attn(modulate(norm(x), c)); x += gate * MLP(modulate(norm(x), c))
    final: modulate(norm(x), c) -> linear -> unpatchify -> (B, C, H, W), the predicted velocity

The network is a pure function of (x, t, class): the flow-matching process that trains and samples
it is `sensorium.diffusion`. Options (each off in DiT, on in LightningDiT): SwiGLU feed-forward,
RMSNorm, 2-D rotary positions instead of fixed sin-cos ones, QK-norm.

Class dropout for classifier-free guidance follows DiT: the label table has one extra row, the null
class (index num_classes), and during training each label is replaced by it with probability
`class_dropout`.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from sensorium.layers.adaln import AdaLNZero, modulate
from sensorium.layers.attention import Attention
from sensorium.layers.mlp import Mlp, SwiGLU
from sensorium.layers.pos_embed import sincos_2d
from sensorium.layers.rope import rope_2d


# --- helpers ------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features of 1000 t (DiT's scale of timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    """(B,) t -> (B, dim): sinusoidal features, then a two-layer MLP."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))


class LabelEmbedder(nn.Module):
    """(B,) class indices -> (B, dim). Index `num_classes` is the null class; in training each label
    becomes it with probability `dropout` (classifier-free guidance needs both predictions)."""

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"class dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.dropout = num_classes, dropout
        self.table = nn.Embedding(num_classes + 1, dim)  # + the null class, also used when dropout is 0

    @property
    def null_class(self) -> int:
        return self.num_classes

    def drop(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels with each one replaced by the null class with probability `dropout`."""
        dropped = torch.rand(labels.shape, device=labels.device) < self.dropout
        return torch.where(dropped, torch.full_like(labels, self.null_class), labels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout > 0:
            labels = self.drop(labels)
        return self.table(labels)


# --- blocks -------------------------------------------------------------------------------------------
def _norm(dim: int, rms: bool) -> nn.Module:
    # No learned affine: adaLN's shift and scale take its place.
    if rms:
        return nn.RMSNorm(dim, eps=1e-6, elementwise_affine=False)
    return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from the condition c (B, dim)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, swiglu: bool = False,
                 rms_norm: bool = False, qk_norm: bool = False):
        super().__init__()
        self.norm1 = _norm(dim, rms_norm)
        self.attn = Attention(dim, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = _norm(dim, rms_norm)
        hidden = int(dim * mlp_ratio)
        # SwiGLU at 2/3 of the width costs what the GELU MLP does (LightningDiT's choice); DiT's MLP
        # uses the tanh approximation of GELU.
        tanh_gelu = partial(nn.GELU, approximate="tanh")
        self.mlp = SwiGLU(dim, int(2 * hidden / 3)) if swiglu else Mlp(dim, hidden, act_layer=tanh_gelu)
        self.adaln = AdaLNZero(dim, dim, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(c)  # each (B, dim)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a), rope=rope)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """Modulated norm, then a linear map of each token to its patch: (B, N, dim) -> (B, N, p * p * C)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, rms_norm: bool = False):
        super().__init__()
        self.norm = _norm(dim, rms_norm)
        self.adaln = AdaLNZero(dim, dim, 2)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln(c)
        return self.linear(modulate(self.norm(x), shift, scale))


# --- model --------------------------------------------------------------------------------------------
class DiT(nn.Module):
    """Class-conditional diffusion transformer predicting a velocity field on latents.

    Args:
        input_size: latent height and width (H = W).
        in_channels: latent channels (the output has as many).
        patch_size: latent pixels per token side; N = (H / p)^2 tokens.
        dim, depth, num_heads, mlp_ratio: transformer sizes.
        num_classes: condition classes (users); the label table adds the null class.
        class_dropout: probability of the null class in training (DiT: 0.1).
        swiglu, rms_norm, rope, qk_norm: LightningDiT's options (see the module docstring).
    """

    def __init__(self, input_size: int = 8, in_channels: int = 4, patch_size: int = 1, dim: int = 256,
                 depth: int = 6, num_heads: int = 4, mlp_ratio: float = 4.0, num_classes: int = 10,
                 class_dropout: float = 0.1, swiglu: bool = False, rms_norm: bool = False, rope: bool = False,
                 qk_norm: bool = False):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.input_size, self.in_channels, self.patch_size = input_size, in_channels, patch_size
        self.grid = input_size // patch_size
        self.num_heads, self.use_rope = num_heads, rope
        self.x_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.t_embed = TimestepEmbedder(dim)
        self.y_embed = LabelEmbedder(num_classes, dim, class_dropout)
        # Fixed sin-cos positions, unless RoPE carries the positions (then none are added to the tokens).
        pos_embed = None if rope else sincos_2d(dim, self.grid, self.grid)[None].clone()  # (1, N, dim)
        self.register_buffer("pos_embed", pos_embed, persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(dim, num_heads, mlp_ratio, swiglu, rms_norm, qk_norm)
                                    for _ in range(depth))
        self.final = FinalLayer(dim, patch_size, in_channels, rms_norm)
        self.initialize_weights()

    @property
    def num_classes(self) -> int:
        return self.y_embed.num_classes

    @property
    def null_class(self) -> int:
        return self.y_embed.null_class

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        return tokens if self.pos_embed is None else tokens + self.pos_embed

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        B, p, g, C = tokens.shape[0], self.patch_size, self.grid, self.in_channels
        x = tokens.view(B, g, g, p, p, C)  # (B, gh, gw, p, p, C)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(B, C, g * p, g * p)  # (B, C, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) noisy latents, t (B,) in [0, 1], y (B,) class indices (the null class
        allowed) -> the velocity (B, C, H, W)."""
        tokens = self.patchify(x)
        c = self.t_embed(t) + self.y_embed(y)  # (B, dim)
        rope = rope_2d(tokens.shape[-1] // self.num_heads, self.grid, self.grid) if self.use_rope else None
        if rope is not None:
            rope = (rope[0].to(x.device), rope[1].to(x.device))
        for block in self.blocks:
            tokens = block(tokens, c, rope)
        return self.unpatchify(self.final(tokens, c))

    # --- init -----------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        # DiT's initialisation. Every linear layer: Xavier-uniform weights, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The patch embedding is a linear map of each flattened patch: initialise it like one.
        nn.init.xavier_uniform_(self.x_embed.weight.view(self.x_embed.weight.shape[0], -1))
        nn.init.zeros_(self.x_embed.bias)
        # Label table and timestep MLP: N(0, 0.02), as DiT.
        nn.init.normal_(self.y_embed.table.weight, std=0.02)
        for layer in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: zero modulations (every block starts as the identity) and a zero output layer,
        # so the untrained model predicts a velocity of exactly 0.
        for module in self.modules():
            if isinstance(module, AdaLNZero):
                module.reset_parameters()
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
