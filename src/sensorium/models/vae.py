"""A convolutional KL-regularised autoencoder (LDM's AutoencoderKL, Rombach et al. 2022), optionally
class-conditioned in encoder and decoder (the doppler note's user-conditioned VA-VAE).

    x (B, C, H, W) in [-1, 1]  --encoder-->  N(mean, exp(logvar)) over z (B, z_channels, H/f, W/f)
    z  --decoder-->  x_hat (B, C, H, W)

f = 2^(len(widths) - 1): every width after the first adds a stride-2 level. Conditioning: a class
embedding (B, cond_dim) enters every residual block as a per-channel bias after its first
convolution, the way a diffusion U-Net takes its timestep. Those projections start at zero, so a
conditional model starts as the unconditional one and learns what the class adds.

Modules and parameters carry LDM's names (`encoder.down.{level}.block.{i}.conv1`, `mid.attn_1.q`,
`decoder.up.{level}.upsample.conv`, `quant_conv`, ...), so the state dict of an LDM AutoencoderKL,
such as LightningDiT's released VA-VAE tokenizer (f16d32: widths (128, 128, 256, 256, 512),
z_channels 32, num_res_blocks 2, attn_levels (4,), quant_conv), loads under its own keys
(`autoencoder_state`, `ConditionalVAE.load_autoencoder`); only the conditioning (`class_embed`, each
block's `cond`) is sensorium's, and starts at zero.

The network knows nothing of losses: `sensorium.losses` has the KL and the VF alignment terms, and
the recipe's task combines them. `encoder.conv_out` is the encoder's last layer, where VA-VAE
measures the gradient norms of its adaptive VF weight; `decoder.conv_out` is the decoder's, where LDM
measures them for the adversarial weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sensorium.layers.attention import masked_sdpa


# --- helpers ------------------------------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
    # LDM's 32 groups wherever the width allows it (every width of its models): the same normalisation,
    # so its weights load; fewer groups for the narrow widths of tests and demos.
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


@dataclass
class DiagonalGaussian:
    """The encoder's posterior: mean and log-variance, each (B, z_channels, h, w)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise


LDM_TRAINING_ONLY = ("loss.", "foundation_model.", "linear_proj.", "model_ema.")
"""Tensors of an LDM / VA-VAE training checkpoint that are not the autoencoder: the LPIPS and
discriminator loss, VA-VAE's frozen DINOv2 and its projection of the latent to DINOv2's width, an
EMA copy."""


def autoencoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors of an LDM AutoencoderKL / VA-VAE state dict, under this module's names:
    a wrapper's "model." (Lightning) or "module." (DDP) prefix stripped, `LDM_TRAINING_ONLY` left out."""
    prefix = next((p for p in ("model.", "module.") if f"{p}encoder.conv_in.weight" in state), "")
    return {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix) and not key[len(prefix):].startswith(LDM_TRAINING_ONLY)}


# --- blocks -------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 (+ condition bias) -> GroupNorm -> SiLU -> conv3x3, plus a skip
    (a 1x1 conv, LDM's nin_shortcut, where the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int = 0):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond = nn.Linear(cond_dim, out_channels) if cond_dim else None
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                             else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        if self.cond is not None and cond is not None:
            h = h + self.cond(cond)[:, :, None, None]  # (B, C, 1, 1): one bias per channel
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the h * w positions of a feature map (LDM's AttnBlock: 1x1
    convolutions for queries, keys, values and the output)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).flatten(2).transpose(1, 2)[:, None] for proj in (self.q, self.k, self.v))
        # q, k, v: (B, 1, H*W, C), one head of width C: softmax(q k^T / sqrt(C)) v, as LDM's AttnBlock
        out = masked_sdpa(q, k, v)[:, 0].transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 conv3x3 with LDM's asymmetric padding (right and bottom), exact halving."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3 (no checkerboard artefacts of a transposed conv)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder (LDM's `down.{i}` / `up.{i}`): residual blocks, each
    followed by self-attention where the level has it, then a resampling conv where one follows."""

    def __init__(self, in_channels: int, width: int, num_blocks: int, cond_dim: int, attention: bool,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(in_channels if i == 0 else width, width, cond_dim)
                                   for i in range(num_blocks))
        self.attn = nn.ModuleList(SpatialSelfAttention(width) for _ in range(num_blocks if attention else 0))
        self.downsample = Downsample(width) if downsample else None
        self.upsample = Upsample(width) if upsample else None

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h, cond)
            if self.attn:
                h = self.attn[i](h)
        if self.downsample is not None:
            h = self.downsample(h)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class MidBlock(nn.Module):
    """Residual block, self-attention, residual block at the lowest resolution (LDM's `mid`)."""

    def __init__(self, channels: int, cond_dim: int, attention: bool):
        super().__init__()
        self.block_1 = ResBlock(channels, channels, cond_dim)
        self.attn_1 = SpatialSelfAttention(channels) if attention else nn.Identity()
        self.block_2 = ResBlock(channels, channels, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x, cond)), cond)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, 2 * z_channels, H / f, W / f): the posterior's mean and log-variance."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], z_channels: int, num_res_blocks: int,
                 cond_dim: int, mid_attention: bool, attn_levels: tuple[int, ...] = ()):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        previous = (widths[0], *widths[:-1])  # each level's input width
        self.down = nn.ModuleList(
            Level(previous[level], width, num_res_blocks, cond_dim, level in attn_levels,
                  downsample=level < len(widths) - 1)
            for level, width in enumerate(widths))
        self.mid = MidBlock(widths[-1], cond_dim, mid_attention)
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h, cond)
        h = self.mid(h, cond)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, C, h * f, w * f). `up[level]` is indexed as the encoder's
    `down[level]` (0: full resolution) and runs from the last level to the first, as in LDM."""

    def __init__(self, out_channels: int, widths: tuple[int, ...], z_channels: int, num_res_blocks: int,
                 cond_dim: int, mid_attention: bool, attn_levels: tuple[int, ...] = ()):
        super().__init__()
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], cond_dim, mid_attention)
        previous = (*widths[1:], widths[-1])  # each level's input width: the level below it
        # One block more than the encoder's per level, as LDM's decoder.
        self.up = nn.ModuleList(
            Level(previous[level], width, num_res_blocks + 1, cond_dim, level in attn_levels,
                  upsample=level > 0)
            for level, width in enumerate(widths))
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mid(self.conv_in(z), cond)
        for level in reversed(self.up):
            h = level(h, cond)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


# --- model --------------------------------------------------------------------------------------------
class ConditionalVAE(nn.Module):
    """KL-VAE with an optional class condition (see the module docstring).

    Args:
        in_channels: image channels (1 for grayscale spectrograms, 3 for RGB).
        widths: channels per resolution level (LDM's ch * ch_mult); f = 2^(len(widths) - 1).
        z_channels: latent channels.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        num_classes: classes of the condition (users); None or 0: unconditional.
        cond_dim: width of the class embedding.
        mid_attention: self-attention in the lowest-resolution block (LDM has it).
        attn_levels: levels (0: full resolution) with self-attention after each residual block, in
            encoder and decoder (LDM's attn_resolutions; VA-VAE f16d32: (4,), its 16x16 level at 256 px).
        quant_conv: LDM's 1x1 convolutions on the posterior's moments (`quant_conv`) and on the latent
            before decoding (`post_quant_conv`); a pretrained AutoencoderKL has them.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 128),
                 z_channels: int = 4, num_res_blocks: int = 1, num_classes: int | None = None,
                 cond_dim: int = 128, mid_attention: bool = True, attn_levels: tuple[int, ...] = (),
                 quant_conv: bool = False):
        super().__init__()
        widths, attn_levels = tuple(widths), tuple(attn_levels)
        if any(not 0 <= level < len(widths) for level in attn_levels):
            raise ValueError(f"attn_levels {attn_levels} must index the {len(widths)} levels of "
                             f"widths {widths}")
        self.in_channels, self.z_channels = in_channels, z_channels
        self.downsample_factor = 2 ** (len(widths) - 1)
        self.num_classes = num_classes or 0
        cond = cond_dim if self.num_classes else 0
        self.class_embed = nn.Embedding(self.num_classes, cond_dim) if self.num_classes else None
        sizes = (widths, z_channels, num_res_blocks, cond, mid_attention, attn_levels)
        self.encoder = Encoder(in_channels, *sizes)
        self.decoder = Decoder(in_channels, *sizes)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1) if quant_conv else None
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1) if quant_conv else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Convolutions keep PyTorch's default (Kaiming-uniform), as LDM's autoencoder.
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)  # DiT's label-table scale
        for module in self.modules():
            if isinstance(module, ResBlock) and module.cond is not None:
                # Zero: the condition adds exactly nothing at first, so training starts from the
                # unconditional autoencoder (a loaded one included) and the class bias grows only where
                # it helps.
                nn.init.zeros_(module.cond.weight)
                nn.init.zeros_(module.cond.bias)

    def conditioning_keys(self) -> set[str]:
        """State-dict keys of the conditioning: the class table and every block's projection."""
        keys = set()
        if self.class_embed is not None:
            keys |= {f"class_embed.{name}" for name, _ in self.class_embed.named_parameters()}
        for prefix, module in self.named_modules():
            if isinstance(module, ResBlock) and module.cond is not None:
                keys |= {f"{prefix}.cond.{name}" for name, _ in module.cond.named_parameters()}
        return keys

    def load_autoencoder(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load an unconditioned autoencoder's tensors (under this module's names: `autoencoder_state`
        of an LDM / VA-VAE checkpoint) into everything but the conditioning, which keeps its zero start:
        the conditioned model then computes exactly what the loaded one does. A state that does not fit
        is a ValueError naming the first keys missing, unexpected, or of another shape; nothing is
        loaded then."""
        conditioning = self.conditioning_keys()
        own = {k: v for k, v in self.state_dict().items() if k not in conditioning}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k} {tuple(state[k].shape)} (the network's: {tuple(v.shape)})"
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or shapes:
            raise ValueError(f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {shapes[:5]}")
        self.load_state_dict(state, strict=False)  # strict would want the conditioning's keys too

    def condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """(B,) class indices -> (B, cond_dim) embedding; None for an unconditional model."""
        if self.class_embed is None:
            return None
        if labels is None:
            raise ValueError("a class-conditional VAE needs labels")
        return self.class_embed(labels)

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """(z_channels, H / f, W / f) for (H, W) images."""
        H, W = image_size
        if H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(f"image size {H}x{W} is not divisible by the downsampling factor "
                             f"{self.downsample_factor}")
        return self.z_channels, H // self.downsample_factor, W // self.downsample_factor

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> DiagonalGaussian:
        moments = self.encoder(x, self.condition(labels))  # (B, 2z, h, w)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)  # each (B, z, h, w)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))  # LDM's clamp keeps exp() finite

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, self.condition(labels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                sample: bool = True) -> tuple[torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """-> (reconstruction (B, C, H, W), posterior, z (B, z, h, w) the latent that was decoded)."""
        posterior = self.encode(x, labels)
        z = posterior.sample() if sample else posterior.mean
        return self.decode(z, labels), posterior, z

    @property
    def encoder_last_layer(self) -> torch.Tensor:
        return self.encoder.conv_out.weight

    @property
    def decoder_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017; the one LDM's autoencoder trains against): strided
    convs to a map of real/fake logits, one per receptive field of ~70 px at three layers.
    GroupNorm instead of BatchNorm (independent of the batch, as everywhere in sensorium)."""

    def __init__(self, in_channels: int = 1, width: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False), _norm(out),
                       nn.LeakyReLU(0.2)]
            channels = out
        blocks.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)  # pix2pix / LDM's weights_init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, h', w') logits
