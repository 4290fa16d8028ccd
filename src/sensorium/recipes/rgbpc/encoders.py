"""The frozen image encoders `sensorium extract rgbpc` runs over every frame: (B, 3, H, W) frames in
[0, 1] -> (B, Hf, Wf, C) patch features, each with the exact transform (`GridTransform`) from a
frame's pixels to its grid.

    conv8   `ConvGridEncoder` (16, 32, 48 channels, stride 8) at the frames' own size, fixed by a seed
    vit16   `TinyViT` (patch 16, width 64, two blocks) on the frames resized by 4/3, fixed by a seed
    shape8  `ConvGridEncoder` (32, 64, 96 channels) pretrained on rendered views of its own
            (`pretrain_shape_encoder`)
    hf      a local `transformers` backbone's patch tokens (`HFPatchEncoder`), frames resized and
            optionally centre-cropped

An `EncoderSpec` names one encoder (`EncoderSpec.parse` reads the command line's `conv8` or
`NAME=hf:DIR` once); `build_encoder` makes it a runnable `Encoder` for frames of one size: `BUILTIN`
holds the built-in kinds (their builder and seed offset), `hf` loads the local backbone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sensorium.data.image_grid import GridTransform
from sensorium.engine.precision import bf16_autocast
from sensorium.errors import ConfigError, DataError
from sensorium.layers.attention import TransformerBlock
from sensorium.layers.conv import ConvStem
from sensorium.layers.pos_embed import sincos_2d
from sensorium.models.encoders import IMAGENET_MEAN, IMAGENET_STD, load_pretrained
from sensorium.recipes.rgbpc.synth import PARTS, SynthConfig, render_views

EncoderKind = Literal["conv8", "vit16", "shape8", "hf"]


# --- networks: (B, 3, H, W) frames in [0, 1] -> (B, Hf, Wf, C) ------------------------------------
class ConvGridEncoder(nn.Module):
    """Three conv stages, stride 8 in all: one feature vector per 8x8 pixels."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48)):
        super().__init__()
        self.stem = ConvStem(3, widths, first_stride=2)
        self.stride, self.channels = 2 ** len(widths), widths[-1]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.stem(frames).permute(0, 2, 3, 1)  # (B, Hf, Wf, C)


class TinyViT(nn.Module):
    """Patch embedding (a strided conv), 2-D sin-cos positions, pre-norm Transformer blocks."""

    def __init__(self, patch: int = 16, dim: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.stride, self.channels = patch, dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.proj(frames)  # (B, C, Hf, Wf)
        B, C, Hf, Wf = x.shape
        tokens = x.flatten(2).transpose(1, 2) + sincos_2d(C, Hf, Wf).to(x)  # (B, Hf*Wf, C)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).view(B, Hf, Wf, C)


class HFPatchEncoder(nn.Module):
    """A local `transformers` backbone's last hidden state without its CLS and register tokens."""

    def __init__(self, local_dir: str | Path):
        super().__init__()
        self.backbone = load_pretrained(local_dir).eval().requires_grad_(False)
        config = self.backbone.config
        self.stride = int(config.patch_size)
        self.channels = int(config.hidden_size)
        self.image_size = int(getattr(config, "image_size", 224))
        self.skip = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, _, H, W = frames.shape
        hidden = self.backbone(pixel_values=(frames - self.mean) / self.std).last_hidden_state  # (B, skip + L, C)
        Hf, Wf = H // self.stride, W // self.stride
        tokens = hidden[:, self.skip:]
        if tokens.shape[1] != Hf * Wf:
            raise ConfigError("encoders", f"{tokens.shape[1]} patch tokens for a {Hf}x{Wf} grid: the model's "
                                          f"CLS/register tokens ({self.skip}) or patch size ({self.stride}) differ")
        return tokens.reshape(B, Hf, Wf, -1)


# --- shape8's pretraining -------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapePretraining:
    """shape8's pretraining (see `pretrain_shape_encoder`)."""

    # 1200 views and 1000 steps, not 400 and 300: the longer pretraining lowered every RGB source's
    # action error (aligned 0.646 -> 0.439, raw 0.822 -> 0.533; demo data seed 1, 96 episodes per
    # task) and raised the aligned features' surface-part readout from 0.94 to 0.96.
    views: int = 1200
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    bf16: bool = True
    """Autocast the steps to bfloat16 (the loss and the weights in float32), as the fits run
    (bf16-mixed): on this project's 2-core CPU (avx512_bf16) a shape8 step took 122 against 150-175
    ms. A CPU without bfloat16 instructions runs it slower: `sensorium extract rgbpc
    --fp32-pretraining` turns it off (the packs record which was used)."""


SHAPE_PRETRAINING = ShapePretraining()


def pretrain_shape_encoder(image_size: tuple[int, int], seed: int, settings: ShapePretraining) -> ConvGridEncoder:
    """shape8: conv8's architecture, wider (32, 64, 96 channels), trained for a thousand steps to
    predict for every 8 x 8 cell the mean camera depth and the share of each surface part (table,
    sphere, cylinder side / top, box side / top, cone, effector, background) of views rendered from
    their own random stream (`synth.render_views`: fresh scenes, never a frame of an episode). A
    small stand-in for the pretrained encoders the note fuses (Depth Anything, DINO), whose features
    know depth and objects from other data; the point features and actions are never used."""
    net = pretrain_on_views(lambda: ConvGridEncoder((32, 64, 96)), lambda net, x: net.stem(x), 96,
                            rendered_views(settings.views, seed, image_size), seed, settings)
    return net


VIEW_TARGETS = 1 + len(PARTS) + 1
"""Per 8 x 8 cell: mean depth, then the share of each surface part and of the background."""


def rendered_views(count: int, seed: int, image_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """`count` views of their own stream (`synth.render_views`) as frames (N, 3, H, W) in [0, 1] and
    their per-cell targets: mean camera depth (N, 1, H/8, W/8) and part shares (N, P + 1, H/8, W/8)."""
    images, depth, parts = render_views(count, seed, SynthConfig(image_size=tuple(image_size)))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    depth_cells = F.avg_pool2d(torch.from_numpy(depth)[:, None], 8)  # (N, 1, H/8, W/8)
    one_hot = F.one_hot(torch.from_numpy(parts), len(PARTS) + 1).permute(0, 3, 1, 2).float()
    return x, depth_cells, F.avg_pool2d(one_hot, 8)  # each part's share of a cell


def view_loss(out: torch.Tensor, depth_cells: torch.Tensor, part_cells: torch.Tensor) -> torch.Tensor:
    """shape8's pretraining loss of a (B, VIEW_TARGETS, H/8, W/8) prediction: L1 on the depth, soft
    cross-entropy on the part shares."""
    return F.l1_loss(out[:, :1], depth_cells) + F.cross_entropy(out[:, 1:], part_cells)


def pretrain_on_views(build: Callable[[], nn.Module], features: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                      channels: int, views: tuple[torch.Tensor, ...], seed: int, settings: ShapePretraining
                      ) -> nn.Module:
    """shape8's pretraining for any network: `build()` (called after seeding torch with `seed`) makes
    it, `features(net, frames)` maps frames (B, 3, H, W) in [0, 1] to a (B, channels, H / 8, W / 8)
    map, and a 1x1 head on it learns each 8 x 8 cell's mean depth (L1) and surface-part shares
    (cross-entropy) on `views`, `rendered_views`' (frames, depth cells, part cells) of their own
    stream (never an episode): rendered by the caller, which may keep them (the student's kept
    objective trains on the same views)."""
    # Built lazily, possibly inside an encoder's inference-mode call: training needs autograd back.
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng():
        x, depth_cells, part_cells = views
        torch.manual_seed(seed)
        net = build()
        head = nn.Conv2d(channels, VIEW_TARGETS, 1)
        optimiser = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=settings.lr, weight_decay=0.01)
        for _ in range(settings.steps):
            idx = torch.randint(len(x), (settings.batch_size,))
            with bf16_autocast(x.device.type, enabled=settings.bf16):
                out = head(features(net, x[idx]))
            loss = view_loss(out.float(), depth_cells[idx], part_cells[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return net


# --- encoders ready to run ------------------------------------------------------------------------
class Encoder:
    """An encoder ready to run: the transform it applies, settings for its packs, and its network
    (built on first use: a pretrained one is only trained when some pack needs it)."""

    def __init__(self, name: str, transform: GridTransform, channels: int, extra: dict,
                 build: Callable[[], nn.Module]):
        self.name, self.transform, self.channels, self.extra = name, transform, channels, extra
        self._build = build

    @functools.cached_property
    def net(self) -> nn.Module:
        return self._build().eval().requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [0, 1] at the original size -> (B, Hf, Wf, C) float32."""
        t = self.transform
        if tuple(frames.shape[-2:]) != t.image_size:
            raise DataError(self.name, f"frames of {list(frames.shape[-2:])} for an encoder made for {list(t.image_size)}")
        x = frames
        if t.resize != t.image_size:
            x = F.interpolate(x, size=t.resize, mode="bilinear", antialias=True, align_corners=False)
        top, left, h, w = t.crop
        x = x[:, :, top:top + h, left:left + w]
        return self.net(x).float().numpy()


# --- which encoder: specs and the built-in kinds --------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    """One encoder to extract with: the packs' name (FEATURES/<name>/...), its kind, and for `hf` the
    local directory of the backbone (nothing is downloaded)."""

    name: str
    kind: EncoderKind
    local_dir: str | None = None

    @classmethod
    def parse(cls, text: str) -> EncoderSpec:
        """`conv8`, `vit16`, `shape8` (named as their kind) or `NAME=hf:LOCAL_DIR`: an `--encoders` value."""
        name, _, source = text.partition("=")
        if source:
            if not source.startswith("hf:"):
                raise ConfigError(text, "an encoder is conv8, vit16, shape8 or NAME=hf:LOCAL_DIR")
            return cls(name, "hf", source[3:])
        if name not in BUILTIN:
            raise ConfigError(text, f"unknown encoder; built in: {', '.join(BUILTIN)}, or NAME=hf:LOCAL_DIR")
        return cls(name, name)


def _seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


def _seeded_conv8(name: str, image_size: tuple[int, int], seed: int, pretraining: ShapePretraining) -> Encoder:
    return Encoder(name, GridTransform.identity(_multiple_of_8(name, image_size), 8), 48,
                   {"kind": "conv8", "seed": seed, "trained": False}, lambda: _seeded(ConvGridEncoder, seed))


def _seeded_vit16(name: str, image_size: tuple[int, int], seed: int, pretraining: ShapePretraining) -> Encoder:
    H, W = image_size
    size = (int(np.ceil(H * 4 / 3 / 16)) * 16, int(np.ceil(W * 4 / 3 / 16)) * 16)
    return Encoder(name, GridTransform((H, W), size, (0, 0, *size), 16), 64,
                   {"kind": "vit16", "seed": seed, "trained": False}, lambda: _seeded(TinyViT, seed))


def _pretrained_shape8(name: str, image_size: tuple[int, int], seed: int, pretraining: ShapePretraining) -> Encoder:
    size = _multiple_of_8(name, image_size)
    return Encoder(name, GridTransform.identity(size, 8), 96,
                   {"kind": "shape8", "seed": seed, "trained": "on rendered views (depth, parts)",
                    **asdict(pretraining)},
                   lambda: pretrain_shape_encoder(size, seed, pretraining))


def _multiple_of_8(name: str, image_size: tuple[int, int]) -> tuple[int, int]:
    H, W = image_size
    if H % 8 or W % 8:
        raise ConfigError(name, f"{name} needs frames whose sides are multiples of 8, got {H}x{W}")
    return H, W


@dataclass(frozen=True)
class Builtin:
    """A built-in encoder kind: how it is built for frames of one size, and its seed offset."""

    build: Callable[[str, tuple[int, int], int, ShapePretraining], Encoder]
    """(name, image size, seed of its network, shape8's pretraining) -> Encoder."""
    seed_offset: int
    """Its network's seed is seed x 1000 + seed_offset: fixed by the seed, different for each encoder,
    the same on every rank and every run (the packs record it)."""


BUILTIN: dict[str, Builtin] = {
    "conv8": Builtin(_seeded_conv8, seed_offset=0),
    "vit16": Builtin(_seeded_vit16, seed_offset=1),
    "shape8": Builtin(_pretrained_shape8, seed_offset=2),
}


def build_encoder(spec: EncoderSpec, image_size: tuple[int, int], seed: int, resize: tuple[int, int] | None = None,
                  crop: tuple[int, int] | None = None, pretraining: ShapePretraining = SHAPE_PRETRAINING) -> Encoder:
    """The encoder `spec` names, for frames of `image_size`. seed: the built-in encoders' networks;
    resize / crop: the `hf` encoders' input (default: resized to the model's config.image_size,
    square, and not cropped); pretraining: shape8's."""
    if spec.kind == "hf":
        net = HFPatchEncoder(spec.local_dir)
        size = tuple(resize) if resize else (net.image_size, net.image_size)
        transform = (GridTransform.resize_center_crop(image_size, size, tuple(crop), net.stride) if crop
                     else GridTransform(tuple(image_size), size, (0, 0, *size), net.stride))
        extra = {"kind": "hf", "local_dir": str(spec.local_dir), "model_type": net.backbone.config.model_type}
        return Encoder(spec.name, transform, net.channels, extra, lambda: net)
    builtin = BUILTIN[spec.kind]
    return builtin.build(spec.name, tuple(image_size), seed * 1000 + builtin.seed_offset, pretraining)
