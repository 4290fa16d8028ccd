"""Reusable blocks, one kind per file. Layer types are passed in, not chosen by strings."""

from sensorium.layers.adaln import AdaLNZero, modulate
from sensorium.layers.attention import Attention, CrossAttention, CrossAttentionBlock, TransformerBlock
from sensorium.layers.mlp import Mlp, SwiGLU
from sensorium.layers.pos_embed import PointFourierEmbed, fourier_point_embed, sincos_1d, sincos_2d
from sensorium.layers.rope import apply_rope, rope_2d

__all__ = [
    "AdaLNZero",
    "modulate",
    "Attention",
    "CrossAttention",
    "CrossAttentionBlock",
    "TransformerBlock",
    "Mlp",
    "SwiGLU",
    "PointFourierEmbed",
    "fourier_point_embed",
    "sincos_1d",
    "sincos_2d",
    "apply_rope",
    "rope_2d",
]
