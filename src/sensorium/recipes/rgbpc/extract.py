"""`sensorium extract rgbpc`: frozen image encoders over every frame -> one feature pack per encoder
and episode.

    sensorium extract rgbpc --frames ROOT/rgb --out FEATURES [--encoders shape8 vit16] [--seed 0]
        [--window 8] [--window-stride 4] [--batch-size 32] [--shard i/n] [--overwrite]
    sensorium extract rgbpc --frames ROOT/rgb --out FEATURES \
        --encoders dinov2=hf:pretrained/dinov2-small --resize 224 224

Encoders (`--encoders`, several at once; each writes FEATURES/<name>/<task>/<episode>.zarr):

- `conv8`: a small conv net (three stages of two 3x3 convolutions, GroupNorm, GELU; stride 8,
  48 channels) at the frames' own size;
- `vit16`: a small ViT (patch 16, width 64, two blocks, 2-D sin-cos positions) on the frames
  resized by 4/3 (to multiples of 16);
- `shape8`: conv8's architecture at 32/64/96 channels, **pretrained** (1000 steps) to
  predict each 8 x 8 cell's mean depth and surface-part shares on 1200 views rendered from their own
  random stream (`pretrain_shape_encoder`): a stand-in for encoders pretrained elsewhere on
  geometry and objects (Depth Anything, DINO); the point features and actions are never used;
- `NAME=hf:DIR`: any `transformers` vision backbone that returns patch tokens (DINOv2, DINOv3,
  Dinov2WithRegisters, ...) loaded with `from_pretrained(DIR)` from a local directory (nothing is
  downloaded); frames ImageNet-normalised, resized to `--resize H W` (default: the model's
  config.image_size) and centre-cropped to `--crop H W` (default: none), the CLS and register tokens
  dropped.

conv8 and vit16 are **fixed by a seed** (random initialisation, never trained); shape8 is fixed by
its seed and its pretraining. The demo fuses shape8 and vit16: two kinds (a pretrained conv net, a
random ViT), two grids (12 x 16 and 8 x 11 on 96 x 128 frames) and widths (96, 64). With random
encoders only (conv8 + vit16) the alignment still retrieves points well, but the aligned features
carry too little of the scene's geometry for the action head (see the README). Each pack records its exact resize / crop / stride (`GridTransform`), so
uv of the original frames map onto its grid.

Finished packs are verified and skipped (resumable); every pack is written atomically (temporary
directory + rename); `--shard i/n` (or the ranks under torchrun: RANK / WORLD_SIZE, or SLURM:
SLURM_PROCID / SLURM_NTASKS) takes every n-th episode, so a cluster extracts a dataset with the
same command on every rank.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import PackWriter, open_pack
from sensorium.errors import ConfigError, DataError
from sensorium.layers.attention import TransformerBlock
from sensorium.layers.conv import ConvStem
from sensorium.layers.pos_embed import sincos_2d
from sensorium.models.encoders import IMAGENET_MEAN, IMAGENET_STD
from sensorium.recipes.rgbpc.reader import episode_steps, read_frames

BUILTIN = ("conv8", "vit16", "shape8")


# --- encoders: (B, 3, H, W) frames in [0, 1] -> (B, Hf, Wf, C) ------------------------------------------
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
        from sensorium.models.encoders import load_pretrained

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


SHAPE_PRETRAINING = ShapePretraining()


def pretrain_shape_encoder(image_size: tuple[int, int], seed: int, settings: ShapePretraining) -> ConvGridEncoder:
    """shape8: conv8's architecture, wider (32, 64, 96 channels), trained for a thousand steps to
    predict for every 8 x 8 cell the mean camera depth and the share of each surface part (table,
    sphere, cylinder side / top, box side / top, cone, effector, background) of views rendered from
    their own random stream (`synth.render_views`: fresh scenes, never a frame of an episode). A
    small stand-in for the pretrained encoders the note fuses (Depth Anything, DINO), whose features
    know depth and objects from other data; the point features and actions are never used."""
    from sensorium.recipes.rgbpc.synth import PARTS, SynthConfig, render_views

    # Built lazily, possibly inside an encoder's inference-mode call: training needs autograd back.
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng():
        images, depth, parts = render_views(settings.views, seed, SynthConfig(image_size=tuple(image_size)))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
        depth_cells = F.avg_pool2d(torch.from_numpy(depth)[:, None], 8)  # (N, 1, H/8, W/8)
        one_hot = F.one_hot(torch.from_numpy(parts), len(PARTS) + 1).permute(0, 3, 1, 2).float()
        part_cells = F.avg_pool2d(one_hot, 8)  # (N, P + 1, H/8, W/8): each part's share of a cell
        torch.manual_seed(seed)
        net = ConvGridEncoder((32, 64, 96))
        head = nn.Conv2d(net.channels, 1 + len(PARTS) + 1, 1)
        optimiser = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=settings.lr, weight_decay=0.01)
        for _ in range(settings.steps):
            idx = torch.randint(len(x), (settings.batch_size,))
            out = head(net.stem(x[idx]))  # (B, 1 + P + 1, H/8, W/8)
            loss = F.l1_loss(out[:, :1], depth_cells[idx]) + F.cross_entropy(out[:, 1:], part_cells[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return net


def build_encoder(spec: str, image_size: tuple[int, int], seed: int, resize: tuple[int, int] | None = None,
                  crop: tuple[int, int] | None = None, pretraining: ShapePretraining = SHAPE_PRETRAINING) -> Encoder:
    """`conv8`, `vit16`, `shape8` or `NAME=hf:DIR` (see the module docstring) for frames of `image_size`."""
    name, _, source = spec.partition("=")
    if source:
        if not source.startswith("hf:"):
            raise ConfigError(spec, "an encoder is conv8, vit16, shape8 or NAME=hf:LOCAL_DIR")
        net = HFPatchEncoder(source[3:])
        size = tuple(resize) if resize else (net.image_size, net.image_size)
        transform = (GridTransform.resize_center_crop(image_size, size, tuple(crop), net.stride) if crop
                     else GridTransform(tuple(image_size), size, (0, 0, *size), net.stride))
        return Encoder(name, transform, net.channels, {"kind": "hf", "local_dir": str(source[3:]),
                                                       "model_type": net.backbone.config.model_type}, lambda: net)
    if name not in BUILTIN:
        raise ConfigError(spec, f"unknown encoder; built in: {', '.join(BUILTIN)}, or NAME=hf:LOCAL_DIR")
    H, W = image_size
    # Fixed by the seed, different for each encoder, the same on every rank and every run.
    generator_seed = seed * 1000 + BUILTIN.index(name)
    if name == "vit16":
        size = (int(np.ceil(H * 4 / 3 / 16)) * 16, int(np.ceil(W * 4 / 3 / 16)) * 16)
        return Encoder(name, GridTransform((H, W), size, (0, 0, *size), 16), 64,
                       {"kind": name, "seed": generator_seed, "trained": False},
                       lambda: _seeded(TinyViT, generator_seed))
    if H % 8 or W % 8:
        raise ConfigError(spec, f"{name} needs frames whose sides are multiples of 8, got {H}x{W}")
    if name == "conv8":
        return Encoder(name, GridTransform.identity((H, W), 8), 48,
                       {"kind": name, "seed": generator_seed, "trained": False},
                       lambda: _seeded(ConvGridEncoder, generator_seed))
    return Encoder(name, GridTransform.identity((H, W), 8), 96,
                   {"kind": name, "seed": generator_seed, "trained": "on rendered views (depth, parts)",
                    **asdict(pretraining)},
                   lambda: pretrain_shape_encoder((H, W), generator_seed, pretraining))


def _seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


# --- the command ------------------------------------------------------------------------------------
def parse_shard(value: str | None) -> tuple[int, int]:
    """`i/n`, or the launcher's rank and world size (torchrun, SLURM), or 0/1."""
    if value:
        try:
            index, count = (int(x) for x in value.split("/"))
        except ValueError:
            raise ConfigError("--shard", f"expected i/n, got {value!r}") from None
        if not 0 <= index < count:
            raise ConfigError("--shard", f"i must be in 0..n-1, got {value!r}")
        return index, count
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    return 0, 1


def pack_is_current(path: Path, frame_paths: list[str], encoder: Encoder, window: int, window_stride: int) -> bool:
    """A finished pack at `path` made from these frames with this encoder and windowing."""
    if not path.exists():
        return False
    try:
        pack = open_pack(path)
    except DataError:
        return False
    return (pack.frame_paths == frame_paths and pack.transform == encoder.transform and pack.extra == encoder.extra
            and pack.window_size == window and pack.window_stride == window_stride)


def extract(frames_root: str | Path, out: str | Path, encoders: list[str], seed: int = 0, window: int = 8,
            window_stride: int = 4, batch_size: int = 32, shard: tuple[int, int] = (0, 1), overwrite: bool = False,
            resize: tuple[int, int] | None = None, crop: tuple[int, int] | None = None,
            progress: bool = True, pretraining: ShapePretraining = SHAPE_PRETRAINING) -> dict:
    """Write the packs of every episode of this shard; returns counts (written, skipped, episodes)."""
    from tqdm import tqdm

    frames_root, out = Path(frames_root), Path(out)
    if not frames_root.is_dir():
        raise DataError(frames_root, "no such frames directory (ROOT/rgb)")
    episodes = [(t.name, e.name) for t in sorted(frames_root.iterdir()) if t.is_dir()
                for e in sorted(t.iterdir()) if e.is_dir()]
    if not episodes:
        raise DataError(frames_root, "no episodes (expected <task>/<episode>/step_XXXX.png)")
    mine = episodes[shard[0]::shard[1]]
    built: dict[tuple[int, int], list[Encoder]] = {}
    written = skipped = 0
    for task, name in tqdm(mine, desc=f"extract rgbpc {shard[0]}/{shard[1]}", unit="episode", disable=not progress):
        directory = frames_root / task / name
        steps = episode_steps(directory)
        if not steps:
            raise DataError(directory, "no frames (step_XXXX.png)")
        frame_paths = [f"{task}/{name}/{s}.png" for s in steps]
        first = read_frames([directory / f"{steps[0]}.png"])
        size = tuple(first.shape[-2:])
        if size not in built:
            built[size] = [build_encoder(spec, size, seed, resize, crop, pretraining) for spec in encoders]
        todo = []
        for encoder in built[size]:
            path = out / encoder.name / task / f"{name}.zarr"
            if not overwrite and pack_is_current(path, frame_paths, encoder, window, window_stride):
                skipped += 1
            else:
                todo.append((encoder, path))
        if not todo:
            continue
        writers = []
        try:
            for encoder, path in todo:
                writers.append(PackWriter(path, frame_paths, encoder.transform, encoder.channels, encoder.name,
                                          window, window_stride, extra=encoder.extra))
            for start in range(0, len(steps), batch_size):
                frames = read_frames([directory / f"{s}.png" for s in steps[start:start + batch_size]])
                for (encoder, _), writer in zip(todo, writers):
                    writer.write(start, encoder(frames))
            for writer in writers:
                writer.close()
                written += 1
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    return {"episodes": len(mine), "written": written, "skipped": skipped, "shard": list(shard)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium extract rgbpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, required=True, help="ROOT/rgb")
    parser.add_argument("--out", type=Path, required=True, help="FEATURES root (default layout: ROOT/features)")
    parser.add_argument("--encoders", nargs="+", default=["shape8", "vit16"], help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="initialisation of the built-in encoders")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard", default=None, help="i/n: every n-th episode from the i-th")
    parser.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="hf encoders: resize to")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="hf encoders: centre crop")
    parser.add_argument("--overwrite", action="store_true", help="re-extract finished packs too")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = extract(args.frames, args.out, args.encoders, args.seed, args.window, args.window_stride,
                     args.batch_size, parse_shard(args.shard), args.overwrite, args.resize, args.crop,
                     progress=not args.no_progress)
    print(f"[extract] rgbpc shard {result['shard'][0]}/{result['shard'][1]}: {result['episodes']} episodes, "
          f"{result['written']} packs written, {result['skipped']} finished ones skipped -> {args.out}")
    return 0
