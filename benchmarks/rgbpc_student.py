"""The deployable RGB-only student against the teacher it was distilled from, on CPU, in one run.

    python benchmarks/rgbpc_student.py [--student DISTIL_RUN/export] [--teacher ALIGN_RUN/checkpoints/best.ckpt]
                                       [--size 96 128] [--batch 32] [--seconds 4] [--rounds 3] [--threads 1]
                                       [--json OUT] [--tiny]

Both turn decoded uint8 camera frames into the aligned space's D-wide features at every cell of the
student's output grid (stride 8 on the demo's 96 x 128 frames: 12 x 16 cells):

- **teacher**: the frozen image encoders of the demo (`shape8`, `vit16`; `sensorium extract rgbpc`'s
  `Encoder`, their resize included) computing their feature maps from the frames, then the
  alignment net's per-encoder adapters, each adapted map sampled at the cells, and the fusion
  (`AlignNet.encoder_features` + `fusion`: what `sensorium eval rgbpc` computes from the packs);
- **student**: `StudentCNN` on the same frames (`sensorium embed rgbpc`'s forward).

Weights do not change the time: without `--teacher` / `--student` both are built from the packaged
`rgbpc/demo` and `rgbpc/distil` YAMLs with random weights; `shape8` is always built with random
weights (its pretraining costs minutes and changes no shape). Each model is timed for `--seconds` in
each of `--rounds` alternating rounds (teacher, student, teacher, ...) at `--threads` threads; printed:
parameters, frames per second by the wall clock (median over rounds) and by this process's CPU time
(the number to compare on a machine that also runs other jobs), and the student's speed-up over
the teacher by both. `--tiny` (32 x 48 frames, batch 2, 0.2 s, one round) checks the script in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch


def _yaml_init_args(name: str) -> dict:
    import yaml

    from sensorium.recipes import resolve_config

    return yaml.safe_load(resolve_config(name).read_text())["model"]["init_args"]


class Teacher(torch.nn.Module):
    """Frames (B, 3, H, W) uint8 -> (B, D, Hs, Ws): the encoders, the adapters at the cells, the fusion."""

    def __init__(self, net, encoders: dict, cells: dict[str, torch.Tensor], grid: tuple[int, int]):
        super().__init__()
        self.net, self.encoders, self.grid = net, encoders, grid
        for name, cell in cells.items():
            self.register_buffer(f"cells_{name}", cell, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 255.0
        B = x.shape[0]
        batch = {}
        for name, encoder in self.encoders.items():
            maps = torch.from_numpy(encoder(x))  # (B, Hf, Wf, C): the extraction's forward, resize included
            batch[f"feat/{name}"] = maps[:, None]  # (B, T=1, Hf, Wf, C)
            batch[f"grid/{name}"] = getattr(self, f"cells_{name}").expand(B, -1, -1)
        fused = self.net.fusion(self.net.encoder_features(batch)).fused  # (B, L, D)
        return fused.transpose(1, 2).reshape(B, -1, *self.grid)


def build(args) -> tuple[Teacher, torch.nn.Module, dict]:
    from sensorium.recipes.rgbpc.distil_task import student_cells
    from sensorium.recipes.rgbpc.encoders import EncoderSpec, ShapePretraining, build_encoder
    from sensorium.recipes.rgbpc.model import (
        AlignNet,
        AlignNetConfig,
        StudentCNN,
        StudentConfig,
        load_student,
    )
    from sensorium.recipes.rgbpc.task import load_align_net

    torch.manual_seed(0)
    if args.teacher:
        net = load_align_net(args.teacher).eval()
    else:
        net = AlignNet(AlignNetConfig(**_yaml_init_args("rgbpc/demo")["net"])).eval()
    if args.student:
        student = load_student(args.student).eval()
    else:
        student = StudentCNN(StudentConfig(**_yaml_init_args("rgbpc/distil")["student"])).eval()
    size = tuple(args.size)
    no_pretraining = ShapePretraining(views=1, steps=0, batch_size=1)  # random weights: the same time
    encoders = {name: build_encoder(EncoderSpec.parse(name), size, seed=0, pretraining=no_pretraining)
                for name in net.encoders}
    own, grids = student_cells(student, size, {n: e.transform for n, e in encoders.items()})
    grid = (size[0] // student.stride, size[1] // student.stride)
    if len(own) != grid[0] * grid[1]:
        raise SystemExit(f"some of the student's {grid} cells lie outside an encoder's crop")
    teacher = Teacher(net, encoders, grids, grid).eval()
    for encoder in encoders.values():
        encoder.net  # built now, not inside the first timed call  # noqa: B018
    used = [*net.adapters.parameters(), *net.fusion.parameters()]
    params = {"teacher": sum(p.numel() for e in encoders.values() for p in e.net.parameters())
              + sum(p.numel() for p in used),
              "teacher_encoders": {n: sum(p.numel() for p in e.net.parameters()) for n, e in encoders.items()},
              "teacher_adapters_fusion": sum(p.numel() for p in used),
              "student": sum(p.numel() for p in student.parameters())}
    return teacher, student, params


def time_model(model: torch.nn.Module, frames: torch.Tensor, seconds: float) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second of this process) over `seconds`."""
    with torch.inference_mode():
        model(frames)  # warm-up
        wall, cpu, count = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall < seconds:
            model(frames)
            count += len(frames)
        return count / (time.perf_counter() - wall), count / max(time.process_time() - cpu, 1e-9)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=None, help="a distillation run's export directory")
    parser.add_argument("--teacher", type=Path, default=None, help="an alignment checkpoint (best.ckpt)")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="32 x 48 frames, batch 2, 0.2 s, one round")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.seconds, args.rounds = [32, 48], 2, 0.2, 1
    torch.set_num_threads(args.threads)
    teacher, student, params = build(args)
    frames = torch.randint(0, 256, (args.batch, 3, *args.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert teacher(frames).shape == student(frames).shape, "teacher and student give different maps"
    load_before = os.getloadavg()[0]
    runs = {"teacher": [], "student": []}
    for _ in range(args.rounds):
        for name, model in (("teacher", teacher), ("student", student)):
            runs[name].append(time_model(model, frames, args.seconds))
    fps = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu_fps = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    result = {"frames": list(args.size), "batch": args.batch, "threads": args.threads, "rounds": args.rounds,
              "seconds_each": args.seconds, "params": params, "fps": fps, "cpu_fps": cpu_fps,
              "speedup": fps["student"] / fps["teacher"], "cpu_speedup": cpu_fps["student"] / cpu_fps["teacher"],
              "teacher_weights": str(args.teacher or "random (rgbpc/demo)"),
              "student_weights": str(args.student or "random (rgbpc/distil)"),
              "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "cpu_count": os.cpu_count()}
    print(f"rgbpc student vs teacher on CPU: {args.size[0]}x{args.size[1]} frames, batch {args.batch}, "
          f"{args.threads} thread(s), load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'model':<10}{'parameters':>12}{'frames/s (wall)':>18}{'frames/s (CPU time)':>22}")
    for name in ("teacher", "student"):
        print(f"{name:<10}{params[name]:>12,}{fps[name]:>18.1f}{cpu_fps[name]:>22.1f}")
    print(f"student speed-up: {result['speedup']:.2f}x (wall), {result['cpu_speedup']:.2f}x (CPU time); teacher "
          f"encoders {params['teacher_encoders']}, adapters + fusion {params['teacher_adapters_fusion']:,}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
