"""Reusable blocks, one kind per file. Layer types are passed in, not chosen by strings."""

from sensorium.layers.attention import Attention, CrossAttention, CrossAttentionBlock, TransformerBlock
from sensorium.layers.mlp import Mlp
from sensorium.layers.pos_embed import PointFourierEmbed, fourier_point_embed, sincos_1d, sincos_2d

__all__ = [
    "Attention",
    "CrossAttention",
    "CrossAttentionBlock",
    "TransformerBlock",
    "Mlp",
    "PointFourierEmbed",
    "fourier_point_embed",
    "sincos_1d",
    "sincos_2d",
]
