"""`sensorium embed rgbpc --ckpt DISTIL_RUN/export --frames ROOT/rgb --out DIR [--batch-size 32]`

RGB-only features from the distilled student: every frame of every episode under `--frames` through
the student CNN, written as feature packs (`sensorium.data.packs`, encoder name `student`) at
DIR/student/<task>/<episode>.zarr: [F, H/s, W/s, D] float16 per episode, with the exact transform
(no resize, stride s), so the features at any pixel uv are read as from any other pack. Neither point
clouds nor the large encoders are needed. `--ckpt` takes the distillation run's export directory
(model.safetensors + config.json), or a DistilTask checkpoint (its run's export is used).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import PackWriter
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.rgbpc.model import load_student
from sensorium.recipes.rgbpc.reader import episode_steps, read_frames


def export_dir_of(path: Path) -> Path:
    """The export directory named by --ckpt: itself, or RUN/export for RUN/checkpoints/*.ckpt."""
    if path.is_dir():
        return path
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent / "export"
    raise ConfigError(path, "expected a distillation run's export directory or one of its checkpoints")


def embed(student_dir: str | Path, frames_root: str | Path, out: str | Path, batch_size: int = 32,
          window: int = 8, window_stride: int = 4) -> dict:
    student = load_student(export_dir_of(Path(student_dir))).eval()
    frames_root, out = Path(frames_root), Path(out)
    if not frames_root.is_dir():
        raise DataError(frames_root, "no such frames directory (ROOT/rgb)")
    episodes = [(t.name, e.name) for t in sorted(frames_root.iterdir()) if t.is_dir()
                for e in sorted(t.iterdir()) if e.is_dir()]
    written = 0
    for task, name in episodes:
        steps = episode_steps(frames_root / task / name)
        if not steps:
            raise DataError(frames_root / task / name, "no frames (step_XXXX.png)")
        paths = [frames_root / task / name / f"{s}.png" for s in steps]
        first = read_frames(paths[:1])
        transform = GridTransform.identity(tuple(first.shape[-2:]), student.stride)
        with PackWriter(out / "student" / task / f"{name}.zarr", [f"{task}/{name}/{s}.png" for s in steps], transform,
                        student.config.dim, "student", window, window_stride,
                        extra={"kind": "student", "export": str(student_dir)}) as pack:
            for start in range(0, len(paths), batch_size):
                frames = read_frames(paths[start:start + batch_size])
                with torch.inference_mode():
                    maps = student((frames * 255).round().to(torch.uint8))  # (B, D, Hs, Ws)
                pack.write(start, maps.permute(0, 2, 3, 1).float().numpy())
        written += 1
    return {"episodes": len(episodes), "written": written}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium embed rgbpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="distillation export dir (or checkpoint)")
    parser.add_argument("--frames", type=Path, required=True, help="ROOT/rgb")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    result = embed(args.ckpt, args.frames, args.out, args.batch_size)
    print(f"[embed] rgbpc: student features of {result['written']} episodes -> {args.out / 'student'}")
    return 0
