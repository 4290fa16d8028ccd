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
  random stream (`encoders.pretrain_shape_encoder`): a stand-in for encoders pretrained elsewhere on
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
carry too little of the scene's geometry for the action head (docs/notes/rgbpc.md). Each pack records its exact resize / crop / stride (`GridTransform`), so
uv of the original frames map onto its grid.

Finished packs are verified and skipped (resumable); every pack is written atomically (temporary
directory + rename); `--shard i/n` (or the ranks under torchrun: RANK / WORLD_SIZE, or SLURM:
SLURM_PROCID / SLURM_NTASKS) takes every n-th episode, so a cluster extracts a dataset with the
same command on every rank.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sensorium.data.packs import PackWriter, open_pack
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.rgbpc.encoders import (
    SHAPE_PRETRAINING,
    Encoder,
    EncoderSpec,
    ShapePretraining,
    build_encoder,
)
from sensorium.recipes.rgbpc.reader import episode_steps, read_frames


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


def extract(frames_root: str | Path, out: str | Path, encoders: Sequence[str | EncoderSpec], seed: int = 0,
            window: int = 8, window_stride: int = 4, batch_size: int = 32, shard: tuple[int, int] = (0, 1),
            overwrite: bool = False, resize: tuple[int, int] | None = None, crop: tuple[int, int] | None = None,
            progress: bool = True, pretraining: ShapePretraining = SHAPE_PRETRAINING) -> dict:
    """Write the packs of every episode of this shard; returns counts (written, skipped, episodes).
    encoders: specs, or `--encoders` values (`conv8`, `NAME=hf:DIR`, ...; see `EncoderSpec.parse`)."""
    from tqdm import tqdm

    specs = [e if isinstance(e, EncoderSpec) else EncoderSpec.parse(e) for e in encoders]
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
            built[size] = [build_encoder(spec, size, seed, resize, crop, pretraining) for spec in specs]
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
    parser.add_argument("--fp32-pretraining", action="store_true",
                        help="train shape8 in float32, not bfloat16 autocast (CPUs without bfloat16 instructions)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    pretraining = replace(SHAPE_PRETRAINING, bf16=False) if args.fp32_pretraining else SHAPE_PRETRAINING
    result = extract(args.frames, args.out, args.encoders, args.seed, args.window, args.window_stride,
                     args.batch_size, parse_shard(args.shard), args.overwrite, args.resize, args.crop,
                     progress=not args.no_progress, pretraining=pretraining)
    print(f"[extract] rgbpc shard {result['shard'][0]}/{result['shard'][1]}: {result['episodes']} episodes, "
          f"{result['written']} packs written, {result['skipped']} finished ones skipped -> {args.out}")
    return 0
