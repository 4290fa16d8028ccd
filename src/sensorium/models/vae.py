"""A convolutional KL-regularised autoencoder (LDM's AutoencoderKL, Rombach et al. 2022), optionally
class-conditioned in encoder and decoder (the doppler note's user-conditioned VA-VAE).

    x (B, C, H, W) in [-1, 1]  --encoder-->  N(mean, exp(logvar)) over z (B, z_channels, H/f, W/f)
    z  --decoder-->  x_hat (B, C, H, W)

f = 2^(len(widths) - 1): every width after the first adds a stride-2 level. Conditioning: a class
embedding (B, cond_dim) enters every residual block as a per-channel bias after its first
convolution, the way a diffusion U-Net takes its timestep. Those projections start at zero, so a
conditional model starts as the unconditional one and learns what the class adds.

The network knows nothing of losses: `sensorium.losses` has the KL and the VF alignment terms, and
the recipe's task combines them. `encoder.conv_out` is the encoder's last layer, where VA-VAE
measures the gradient norms of its adaptive VF weight; `decoder.conv_out` is the decoder's, where LDM
measures them for the adversarial weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sensorium.layers.attention import Attention


# --- helpers ------------------------------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
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


# --- blocks -------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 (+ condition bias) -> GroupNorm -> SiLU -> conv3x3, plus a skip."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int = 0):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond = nn.Linear(cond_dim, out_channels) if cond_dim else None
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        if self.cond is not None and cond is not None:
            h = h + self.cond(cond)[:, :, None, None]  # (B, C, 1, 1): one bias per channel
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the h * w positions of a feature map (LDM's mid block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.attn = Attention(channels, num_heads=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        return x + self.attn(tokens).transpose(1, 2).reshape(B, C, H, W)


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


class _MidBlock(nn.Module):
    def __init__(self, channels: int, cond_dim: int, attention: bool):
        super().__init__()
        self.res1 = ResBlock(channels, channels, cond_dim)
        self.attn = SpatialSelfAttention(channels) if attention else nn.Identity()
        self.res2 = ResBlock(channels, channels, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, cond)), cond)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, 2 * z_channels, H / f, W / f): the posterior's mean and log-variance."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], z_channels: int, num_res_blocks: int,
                 cond_dim: int, mid_attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        previous = widths[0]
        for level, width in enumerate(widths):
            self.blocks.append(nn.ModuleList(ResBlock(previous if i == 0 else width, width, cond_dim)
                                             for i in range(num_res_blocks)))
            previous = width
            self.downs.append(Downsample(width) if level < len(widths) - 1 else nn.Identity())
        self.mid = _MidBlock(previous, cond_dim, mid_attention)
        self.norm_out = _norm(previous)
        self.conv_out = nn.Conv2d(previous, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(x)
        for blocks, down in zip(self.blocks, self.downs):
            for block in blocks:
                h = block(h, cond)
            h = down(h)
        h = self.mid(h, cond)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, C, h * f, w * f)."""

    def __init__(self, out_channels: int, widths: tuple[int, ...], z_channels: int, num_res_blocks: int,
                 cond_dim: int, mid_attention: bool):
        super().__init__()
        top = widths[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = _MidBlock(top, cond_dim, mid_attention)
        self.blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        previous = top
        for level, width in reversed(list(enumerate(widths))):
            # One block more than the encoder's per level, as LDM's decoder.
            self.blocks.append(nn.ModuleList(ResBlock(previous if i == 0 else width, width, cond_dim)
                                             for i in range(num_res_blocks + 1)))
            previous = width
            self.ups.append(Upsample(width) if level > 0 else nn.Identity())
        self.norm_out = _norm(previous)
        self.conv_out = nn.Conv2d(previous, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mid(self.conv_in(z), cond)
        for blocks, up in zip(self.blocks, self.ups):
            for block in blocks:
                h = block(h, cond)
            h = up(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


# --- model --------------------------------------------------------------------------------------------
class ConditionalVAE(nn.Module):
    """KL-VAE with an optional class condition (see the module docstring).

    Args:
        in_channels: image channels (1 for grayscale spectrograms, 3 for RGB).
        widths: channels per resolution level; f = 2^(len(widths) - 1).
        z_channels: latent channels.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        num_classes: classes of the condition (users); None or 0: unconditional.
        cond_dim: width of the class embedding.
        mid_attention: self-attention in the lowest-resolution block (LDM has it).
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 128),
                 z_channels: int = 4, num_res_blocks: int = 1, num_classes: int | None = None,
                 cond_dim: int = 128, mid_attention: bool = True):
        super().__init__()
        self.in_channels, self.z_channels = in_channels, z_channels
        self.downsample_factor = 2 ** (len(widths) - 1)
        self.num_classes = num_classes or 0
        cond = cond_dim if self.num_classes else 0
        self.class_embed = nn.Embedding(self.num_classes, cond_dim) if self.num_classes else None
        self.encoder = Encoder(in_channels, tuple(widths), z_channels, num_res_blocks, cond, mid_attention)
        self.decoder = Decoder(in_channels, tuple(widths), z_channels, num_res_blocks, cond, mid_attention)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Convolutions keep PyTorch's default (Kaiming-uniform), as LDM's autoencoder.
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)  # DiT's label-table scale
        for module in self.modules():
            if isinstance(module, ResBlock) and module.cond is not None:
                # Zero: the condition adds nothing at first, so training starts from the unconditional
                # autoencoder and the class bias grows only where it helps.
                nn.init.zeros_(module.cond.weight)
                nn.init.zeros_(module.cond.bias)

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
        mean, logvar = self.encoder(x, self.condition(labels)).chunk(2, dim=1)  # each (B, z, h, w)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))  # LDM's clamp keeps exp() finite

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
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
