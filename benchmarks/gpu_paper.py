"""Each recipe's PAPER config on one device: step time, samples/s, peak memory, the share of a step
spent waiting for data, and the model FLOP utilisation (MFU), in one run.

    python benchmarks/gpu_paper.py                                   # all six paper configs, one GPU
    python benchmarks/gpu_paper.py --recipes welding doppler --steps 30 --out bench_out
    python benchmarks/gpu_paper.py --device cpu --steps 2 --warmup 1 --tiny   # the test's run

Rows: welding/paper, tactile/paper, cardiac/paper, rgbpc/paper, doppler/paper (the VAE) and
doppler/dit_paper (the DiT). Each row builds synthetic data in the recipe's real on-disk layout (its
own `synth` and `prepare` steps) at the paper's input sizes, builds the model and datamodule from the
packaged YAML through the engine's CLI (`SensoriumCLI`, so the config means what `sensorium fit`
makes of it), and fits on ONE device for `--warmup` + `--steps` + 1 optimiser steps with the
YAML's precision, gradient accumulation and clipping, and its DataLoader workers. The engine's
other callbacks (doctor, checkpoints, lr monitor, export), loggers and validation are left out:
the rows measure training steps. The FLOPs are counted on the step after the timed ones.

What cannot be had offline is replaced, and each row says so (`stand-ins`):
- pretrained backbones (V-JEPA 2 ViT-L, DINOv2-B, AST for welding; CLIP ViT-L/14 for tactile;
  DINOv2-L for doppler's VF loss) are randomly initialised from their released configs (config
  classes of `transformers`, nothing downloaded) and saved to a local folder the YAML then loads:
  the same sizes, token counts and FLOPs as the real weights;
- rgbpc's four frozen encoders only ever reach training as feature packs: packs of random values at
  the paper's widths (1024, 1024, 1024, 2048) on a 14 x 14 grid (a ViT-L/16 at 224 px), and random
  256-d ULIP point features;
- the DiT's latents are random, in the shape the paper VAE writes (32 x 16 x 16).
Where welding/paper names a `feature_cache` (its frozen encoders' tokens, computed once), the row
uses it, moved into the work folder: it is built inside the fit before the timed steps (in `fit s`),
and the steps read tokens instead of decoding media, so those encoders' FLOPs are not in the step.
Synthetic media are stored at the model's input sizes (welding: 32 frames of 224 px, five 224 px
photos, 10.24 s of audio), so decoding costs the least it can: real recordings, longer and larger,
make the data-wait share larger, never smaller.

Columns:
- step ms: wall-clock time per optimiser step over the timed steps (the device synchronised at
  every batch start and end, so the time a step waits is not hidden by asynchronous launches);
- samples/s: samples per optimiser step (batch x accumulation) / step time;
- peak mem: torch.cuda.max_memory_allocated over the timed steps on a GPU; on a CPU the process's
  peak resident memory over them (VmHWM, reset at the first timed step; it includes what earlier
  rows left in the process's allocator; `peak_memory_kind` in the JSON says which);
- data wait: the share of the timed wall clock the training loop spent fetching batches from the
  DataLoader and moving them to the device: Lightning's batch transfer, which includes a task's
  `on_after_batch_transfer` (tactile augments its batches on the device there);
- TFLOP/step: model FLOPs of one optimiser step (forward and backward of every batch of it, frozen
  encoders' forward included) counted with torch.utils.flop_counter's formulas (`ModelFlops`);
- MFU: those FLOPs / step time / the device's peak dense bf16 (= fp16) tensor throughput, from
  PEAK_TFLOPS by device name or `--peak-tflops`; n/a on a CPU or an unknown device.

Budget: all six rows within 8 minutes on one H100, by design rather than by a timeout: most of it is
building data and random backbones on the host (estimated at 2-3 minutes on 16 cores from builds on
a loaded 2-core machine; no GPU was at hand to measure the whole run), then 27 short steps per row
at the defaults. Building is skipped for what `--work DIR` already holds (a rerun reuses it).
On a CPU the paper sizes take hours; `--tiny` shrinks them (widths, depths, frames, image sizes,
points, batch sizes: the sizes of tests/recipes/test_paper_torchrun.py) and leaves everything else
as the paper's, so that `--device cpu --steps 2 --warmup 1 --tiny` runs every row in under a minute
(27 s at one thread on a loaded 2-core machine).

Prints each row as it ends and one table at the end (with --out DIR, DIR/gpu_paper.json is rewritten
after every row, so a run cut short keeps the rows it finished); exits 1 when a row failed (its error
is in the table, its traceback above it; the other rows still run).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count, shape_wrapper

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s by device name, from the vendor's data sheets;
# the first entry whose key occurs in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),  # SXM5: "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),
    ("A100", 312.0),
]


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense bf16 TFLOP/s, or None when PEAK_TFLOPS does not know it."""
    return next((peak for key, peak in PEAK_TFLOPS if key in device_name), None)


# --- random stand-ins for pretrained backbones -----------------------------------------------------
def random_backbone(directory: Path, model_class: str, config_class: str, **config) -> str:
    """A `transformers` model of `config`, randomly initialised (seed 0) and saved to `directory`
    (reused when it is already there): what the YAML's `pretrained: DIR` then loads."""
    import transformers

    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**config))
        model.save_pretrained(directory)
    return str(directory)


# The released configs of the paper's backbones (only the fields that differ from the config
# classes' defaults, which are these models' own where not given).
PAPER_BACKBONES = {
    "vjepa2-vitl-fpc64-256": ("VJEPA2Model", "VJEPA2Config", {}),
    "dinov2-base": ("Dinov2Model", "Dinov2Config", {"image_size": 518}),
    "ast-finetuned-audioset-14-14": ("ASTModel", "ASTConfig", {"frequency_stride": 14, "time_stride": 14}),
    "clip-vit-large-patch14": ("CLIPVisionModel", "CLIPVisionConfig",
                               {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16, "image_size": 224, "patch_size": 14,
                                "projection_dim": 768}),
    "dinov2-large": ("Dinov2Model", "Dinov2Config", {"hidden_size": 1024, "num_hidden_layers": 24,
                                                     "num_attention_heads": 16, "image_size": 518}),
}
# --tiny: one-block backbones at the shapes the tiny inputs give them (test_paper_torchrun's).
TINY_BACKBONES = {
    "vjepa2-vitl-fpc64-256": ("VJEPA2Model", "VJEPA2Config",
                              {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "crop_size": 32,
                               "patch_size": 16, "frames_per_clip": 4, "tubelet_size": 2, "pred_hidden_size": 32,
                               "pred_num_attention_heads": 2, "pred_num_hidden_layers": 1}),
    "dinov2-base": ("Dinov2Model", "Dinov2Config", {"hidden_size": 32, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "intermediate_size": 64,
                                                    "image_size": 32, "patch_size": 16}),
    "ast-finetuned-audioset-14-14": ("ASTModel", "ASTConfig",
                                     {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "intermediate_size": 64, "max_length": 32, "num_mel_bins": 16}),
    "clip-vit-large-patch14": ("CLIPVisionModel", "CLIPVisionConfig",
                               {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                "num_attention_heads": 2, "image_size": 32, "patch_size": 8}),
    "dinov2-large": ("Dinov2Model", "Dinov2Config", {"hidden_size": 16, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2, "intermediate_size": 32,
                                                     "image_size": 16, "patch_size": 4}),
}


# --- per row: data + overrides ---------------------------------------------------------------------
@dataclass
class Plan:
    """What a row's builder needs to know."""

    work: Path
    """Where the row's data (and the shared random backbones) go."""
    tiny: bool
    batch: int | None
    """--batch-size: samples per training batch, or None for the paper's."""
    batches: int
    """Training batches the fit reads (accumulation x optimiser steps, + 1 the loader prefetches)."""
    workers: int
    """Processes for synthesis and preparation."""
    data_args: dict = field(default_factory=dict)
    """The YAML's data.init_args."""

    def backbone(self, name: str) -> str:
        model_class, config_class, config = (TINY_BACKBONES if self.tiny else PAPER_BACKBONES)[name]
        size = "tiny" if self.tiny else "paper"
        return random_backbone(self.work / "backbones" / size / name, model_class, config_class, **config)


@dataclass
class Built:
    data: Path
    overrides: list[str]
    stand_ins: list[str] = field(default_factory=list)
    batch: int = 0
    """Samples per training batch (for samples/s)."""
    notes: list[str] = field(default_factory=list)


def _once(directory: Path, key: dict, build: Callable[[], None]) -> None:
    """Run `build` into an empty `directory` unless a finished build with the same key is there."""
    marker = directory / "benchmark_build.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return
    shutil.rmtree(directory, ignore_errors=True)  # another key's or an unfinished build's files
    build()
    marker.write_text(json.dumps(key))


def welding(plan: Plan) -> Built:
    from sensorium.recipes.welding.synth import SynthSizes, generate

    # Per batch: classes_per_batch classes x samples_per_class runs (the paper's 8 x 4).
    per_class = 2 if plan.tiny else 4
    classes = (plan.batch // per_class) if plan.batch else (3 if plan.tiny else 8)
    if plan.batch and (plan.batch % per_class or not 2 <= classes <= 12):
        raise ValueError(f"welding: --batch-size must be a multiple of {per_class} from {2 * per_class} to "
                         f"{12 * per_class} (2 to 12 classes of {per_class} runs)")
    sizes = (SynthSizes(video_size=32, video_frames=8, image_size=32, num_images=2, audio_seconds=0.4) if plan.tiny
             else SynthSizes(video_size=224, video_frames=32, image_size=224, num_images=5, audio_seconds=10.3))
    data = plan.work / "welding" / ("tiny" if plan.tiny else "paper")

    def build() -> None:
        # per_class TRAIN runs and one more per class for the paper's VAL rows: `sensorium synth
        # welding` writes TRAIN and TEST, and its TEST rows are relabelled VAL (nothing here tests).
        manifest = generate(data, seed=0, samples_per_class=per_class + 1, test_fraction=1 / (per_class + 1),
                            sizes=sizes)
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["SPLIT"] = "VAL" if row["SPLIT"] == "TEST" else row["SPLIT"]
        with open(manifest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    _once(data, {"sizes": asdict(sizes), "per_class": per_class}, build)
    net, init = "--model.init_args.net.", "--data.init_args."
    overrides = [f"{net}video.pretrained", plan.backbone("vjepa2-vitl-fpc64-256"),
                 f"{net}images.pretrained", plan.backbone("dinov2-base"),
                 f"{net}audio.pretrained", plan.backbone("ast-finetuned-audioset-14-14"),
                 f"{init}classes_per_batch", str(classes), f"{init}samples_per_class", str(per_class),
                 f"{init}batches_per_epoch", str(plan.batches)]
    notes = []
    if plan.data_args.get("feature_cache"):  # the YAML's cache, moved out of the working directory
        overrides += [f"{init}feature_cache", str(data.parent / f"{data.name}_features")]
        notes.append("frozen encoders' tokens read from the YAML's feature_cache, built inside fit s (not in "
                     "TFLOP/step)")
    if plan.tiny:
        overrides += [f"{net}sensor", "{width: 16, depth: 1, heads: 2, patch: 8}", f"{net}fusion_dim", "32",
                      f"{net}fusion_tokens", "2", f"{net}fusion_heads", "2", f"{net}embed_dim", "32",
                      f"{init}preprocess", ("{num_frames: 4, frame_size: 32, num_images: 2, image_size: 32, "
                                            "n_mels: 16, audio_frames: 32, sensor_length: 64}"),
                      f"{init}num_workers", "0"]
    return Built(data, overrides, ["V-JEPA 2 ViT-L, DINOv2-B and AST: random weights"], classes * per_class, notes)


def tactile(plan: Plan) -> Built:
    from sensorium.recipes.tactile.synth import generate

    batch = plan.batch or (5 if plan.tiny else 8)
    data = plan.work / "tactile" / ("tiny" if plan.tiny else "paper")
    # Objects, not windows, are split (15% val, 15% test): 6 + 3 objects leave about 6 for training,
    # x 3 sensors x every contact frame of a recording.
    key = {"frames": 4 if plan.tiny else 8, "size": 32 if plan.tiny else 224}
    _once(data, key, lambda: generate(data, seed=0, items_indoor=6, items_outdoor=3, **key))
    model, init = "--model.init_args.model.", "--data.init_args."
    overrides = [f"{model}pretrained", plan.backbone("clip-vit-large-patch14"), f"{init}batch_size", str(batch),
                 f"{init}batches_per_epoch", str(plan.batches)]
    if plan.tiny:
        overrides += [f"{model}img_size", "32", f"{model}patch_size", "8", f"{model}decoder_embed_dim", "16",
                      f"{model}decoder_depth", "1", f"{model}decoder_num_heads", "2",
                      f"{init}image_size", "32", f"{init}num_workers", "0"]
    return Built(data, overrides, ["CLIP ViT-L/14 vision tower: random weights"], batch)


def cardiac(plan: Plan) -> Built:
    from sensorium.recipes.cardiac.prepare import PrepareConfig, run
    from sensorium.recipes.cardiac.synth import generate

    batch = plan.batch or (1 if plan.tiny else 16)
    cases = batch + 4  # a batch of training cases, one or two each for val and test, and a spare
    shape, spacing = ((44, 44, 33), (3.0, 3.0, 4.0)) if plan.tiny else ((128, 128, 64), (1.0, 1.0, 2.0))
    points = (PrepareConfig(surface_points=512, volume_points=256, near_points=256, grid_resolution=12) if plan.tiny
              else PrepareConfig(surface_points=8192, volume_points=2048, near_points=2048, grid_resolution=16))
    root = plan.work / "cardiac" / ("tiny" if plan.tiny else "paper")

    def build() -> None:
        generate(root / "raw", seed=0, cases=cases, shape=shape, spacing=spacing, workers=plan.workers)
        # Splits are drawn by a hash of each case id; a split with any fraction gets at least one case.
        run(root / "raw", root / "data", points, workers=plan.workers, val_fraction=0.5 / cases,
            test_fraction=0.5 / cases, progress=False)

    _once(root, {"cases": cases, "shape": shape, "points": asdict(points), "splits": "val, test 0.5 / cases"}, build)
    init = "--data.init_args."
    overrides = [f"{init}batch_size", str(batch), f"{init}batches_per_epoch", str(plan.batches)]
    if plan.tiny:
        net, loss, evaluation = "--model.init_args.net.", "--model.init_args.loss.", "--model.init_args.evaluation."
        overrides += [f"{net}dim", "32", f"{net}num_latents", "8", f"{net}depth", "1", f"{net}head_dim", "16",
                      f"{net}num_freqs", "4", f"{net}kl_dim", "4", f"{loss}surface_queries", "64",
                      f"{loss}eikonal_points", "32", f"{evaluation}grid_resolution", "16",
                      f"{init}sampling", "{surface_points: 256, volume_points: 128, near_points: 128}",
                      f"{init}num_workers", "0"]
    return Built(root / "data", overrides, [], batch)


RGBPC_PAPER_WIDTHS = {"dinov3": 1024, "da3": 1024, "croco": 1024, "vggt": 2048}
RGBPC_TINY_WIDTHS = {"dinov3": 16, "da3": 16, "croco": 16, "vggt": 32}
ULIP_DIM = 256


def rgbpc(plan: Plan) -> Built:
    from sensorium.data.image_grid import GridTransform
    from sensorium.data.packs import write_pack
    from sensorium.recipes.rgbpc.reader import episode_steps
    from sensorium.recipes.rgbpc.synth import TASKS, SynthConfig, generate

    batch = plan.batch or (3 if plan.tiny else 64)
    widths = RGBPC_TINY_WIDTHS if plan.tiny else RGBPC_PAPER_WIDTHS
    image_size = (32, 48) if plan.tiny else (96, 128)
    # tiny: the frames' own grid at stride 8; paper: a ViT-L/16 on the frames resized to 224 x 224.
    transform = (GridTransform.identity(image_size, 8) if plan.tiny
                 else GridTransform(image_size, (224, 224), (0, 0, 224, 224), 16))
    steps, window, stride = (10, 8, 2) if plan.tiny else (16, 8, 1)
    windows = (steps - window) // stride + 1
    # About 60% of each task's episodes train (25% test, 10% val): enough for one batch of windows.
    episodes = math.ceil(batch / windows / len(TASKS) / 0.6) + 2
    data = plan.work / "rgbpc" / ("tiny" if plan.tiny else "paper")

    def build() -> None:
        config = SynthConfig(episodes_per_task=episodes, steps=steps, image_size=image_size,
                             points=128 if plan.tiny else 1024)
        generate(data, seed=0, config=config, workers=plan.workers)
        rng = np.random.default_rng(0)
        (Hf, Wf), frames = transform.grid, steps
        # One block of random features per encoder, shared by the episodes (values do not change the cost).
        blocks = {name: rng.standard_normal((frames, Hf, Wf, width), dtype=np.float32).astype(np.float16)
                  for name, width in widths.items()}
        for directory in sorted((data / "rgb").glob("*/*")):
            task, name = directory.parent.name, directory.name
            frame_paths = [f"{task}/{name}/{s}.png" for s in episode_steps(directory)]
            for encoder, block in blocks.items():
                write_pack(data / "features" / encoder / task / f"{name}.zarr", block[:len(frame_paths)],
                           frame_paths, transform, encoder=encoder, window=window, window_stride=stride,
                           extra={"kind": "benchmark stand-in: random features"})
            if not plan.tiny:  # ULIP's 256-d point features in place of the generator's 32-d teacher
                for sidecar in sorted((data / "pc" / task / name).glob("*.npz")):
                    with np.load(sidecar) as points:
                        uv = points["uv"]
                    np.savez(sidecar, uv=uv, pc_feat=rng.standard_normal((len(uv), ULIP_DIM), dtype=np.float32))

    _once(data, {"episodes": episodes, "steps": steps, "widths": widths, "transform": transform.to_dict()}, build)
    init = "--data.init_args."
    overrides = [f"{init}batch_size", str(batch), f"{init}batches_per_epoch", str(plan.batches)]
    if plan.tiny:
        net = "--model.init_args.net."
        overrides += [f"{net}encoders", "{" + ", ".join(f"{k}: {w}" for k, w in widths.items()) + "}",
                      f"{net}dim", "16", f"{net}adapter_hidden", "16", f"{net}pc_dim", "32", f"{net}set_tokens", "8",
                      f"{init}points", "16", f"{init}eval_windows", "4", f"{init}eval_points", "8",
                      f"{init}action_points", "16", f"{init}action_train_episodes", "6", f"{init}num_workers", "0"]
    grid = "x".join(str(n) for n in transform.grid)
    stand_ins = [f"encoder packs: random values, widths {list(widths.values())} on a {grid} grid"]
    if not plan.tiny:
        stand_ins.append(f"ULIP point features: random {ULIP_DIM}-d")
    return Built(data, overrides, stand_ins, batch)


DOPPLER_USERS = 8


def doppler(plan: Plan) -> Built:
    from sensorium.recipes.doppler.prepare import prepare
    from sensorium.recipes.doppler.synth import generate

    batch = plan.batch or (4 if plan.tiny else 16)
    # No batches_per_epoch in doppler's datamodule: enough training images for every batch in one
    # epoch (train about 60% of each user's recordings: 20% val, 20% test).
    per_user = math.ceil(batch * plan.batches / DOPPLER_USERS / 0.55) + 2
    root = plan.work / "doppler" / ("tiny" if plan.tiny else "paper")

    def build() -> None:
        generate(root / "raw", users=DOPPLER_USERS, per_user=per_user, seed=0)
        prepare(root / "raw", root / "data", val_ratio=0.2)

    _once(root, {"per_user": per_user}, build)
    init, vf = "--data.init_args.", "--model.init_args.vf."
    overrides = [f"{vf}pretrained", plan.backbone("dinov2-large"), f"{init}batch_size", str(batch)]
    if plan.tiny:
        net, loss = "--model.init_args.net.", "--model.init_args.loss."
        overrides += [f"{net}widths", "[8, 8, 8, 8, 8]", f"{net}z_channels", "4", f"{net}cond_dim", "8",
                      f"{loss}disc_width", "8", f"{loss}disc_layers", "2", f"{vf}input_size", "16",
                      f"{init}image_size", "64", f"{init}num_workers", "0"]
    return Built(root / "data", overrides, ["DINOv2-L (VF loss): random weights; the VAE from scratch"], batch)


def doppler_dit(plan: Plan) -> Built:
    from safetensors.torch import save_file

    from sensorium.recipes.doppler.latents import channel_statistics

    batch = plan.batch or (4 if plan.tiny else 16)
    shape = (4, 4, 4) if plan.tiny else (32, 16, 16)  # the VAE's z_channels x (256 / 16)^2
    counts = {"train": batch * plan.batches, "val": batch}
    data = plan.work / "doppler_dit" / ("tiny" if plan.tiny else "paper")

    def build() -> None:
        generator = torch.Generator().manual_seed(0)
        tensors = {}
        for split, n in counts.items():
            tensors[f"{split}_mean"] = torch.randn(n, *shape, generator=generator)
            tensors[f"{split}_std"] = torch.rand(n, *shape, generator=generator) * 0.1 + 0.01
            tensors[f"{split}_label"] = torch.arange(n) % DOPPLER_USERS
        tensors["channel_mean"], tensors["channel_std"] = channel_statistics(tensors["train_mean"])
        data.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(data / "latents.safetensors"))
        users = list(range(1, DOPPLER_USERS + 1))
        (data / "latents.json").write_text(json.dumps({
            "latent_shape": list(shape), "users": users, "counts": counts,
            "channel_mean": tensors["channel_mean"].tolist(), "channel_std": tensors["channel_std"].tolist(),
            "vae": {"checkpoint": None, "note": "benchmarks/gpu_paper.py: random latents", "latent_shape": list(shape),
                    "users": users, "image_size": 256, "channels": 3},
            "data": {"root": None, "fingerprint": None}}))

    _once(data, {"shape": shape, "counts": counts}, build)
    overrides = ["--data.init_args.batch_size", str(batch)]
    if plan.tiny:
        net = "--model.init_args.net."
        overrides += [f"{net}dim", "32", f"{net}depth", "1", f"{net}num_heads", "2",
                      "--data.init_args.num_workers", "0"]
    return Built(data, overrides, [f"latents: random, {shape[0]}x{shape[1]}x{shape[2]}"], batch)


ROWS: dict[str, tuple[str, Callable[[Plan], Built]]] = {
    "welding/paper": ("welding", welding),
    "tactile/paper": ("tactile", tactile),
    "cardiac/paper": ("cardiac", cardiac),
    "rgbpc/paper": ("rgbpc", rgbpc),
    "doppler/paper": ("doppler", doppler),
    "doppler/dit_paper": ("doppler", doppler_dit),
}
RECIPES = ("welding", "tactile", "cardiac", "rgbpc", "doppler")


# --- measuring ------------------------------------------------------------------------------------
class TimedBatches:
    """A training DataLoader whose every `next()` is timed into `clock.fetch_seconds`; anything else
    (len, sampler, batch_sampler, which Lightning reads) is the loader's own."""

    def __init__(self, loader, clock: StepClock):
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (an object being copied): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.clock.fetched(start, time.perf_counter())
            yield batch


class StepClock(L.Callback):
    """Times optimiser steps warmup + 1 .. warmup + steps (inclusive) and counts the FLOPs of the step
    after them.

    Lightning's loop, per batch: fetch the NEXT batch from the loader (it prefetches one), move this
    one to the device, on_train_batch_start, the step, on_train_batch_end. The data wait of a batch
    is its fetch (`TimedBatches`) plus the time from the fetch's return to on_train_batch_start (the
    transfer); on a GPU the device is synchronised at both hooks, so neither hides in a queue.
    """

    def __init__(self, warmup: int, steps: int, cuda: bool):
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.start: float | None = None
        self.stop: float | None = None
        self.batches = 0
        self.wait = 0.0
        self.peak_bytes = 0
        self.memory_kind = ""
        self.flops: int | None = None
        self._fetch: tuple[float, float] | None = None
        self._counter: ModelFlops | None = None
        self._counted = 0

    def fetched(self, start: float, end: float) -> None:
        self._fetch = (start, end)

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def timing(self) -> bool:
        return self.start is not None and self.stop is None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = self._now()
        if self.timing and self._fetch is not None:
            fetch_start, fetch_end = self._fetch
            self.wait += (fetch_end - fetch_start) + (now - fetch_end)
        self._fetch = None
        if trainer.global_step == self.warmup + self.steps:  # a batch of the counted step
            self._counter = ModelFlops()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = self._now()
        step = trainer.global_step  # optimiser steps completed, this batch's included
        if self.timing:
            self.batches += 1
            if step == self.warmup + self.steps:
                self.stop = now
                self.peak_bytes = peak_memory_bytes(self.cuda)
        elif self.start is None and step == self.warmup:
            self.start = now
            self.memory_kind = reset_peak_memory(self.cuda)
        if self._counter is not None:  # counted from batch start to end: not the loader's work between
            self._counter.__exit__(None, None, None)
            self._counted += self._counter.total
            self._counter = None
            if step > self.warmup + self.steps:
                self.flops = self._counted


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


class ModelFlops(TorchDispatchMode):
    """FLOPs of every op run inside it, by torch.utils.flop_counter's formulas (`flop_registry`, what
    `FlopCounterMode` counts with), plus the CPU's attention kernels, which that registry lacks (on a
    CPU, SDPA runs `_scaled_dot_product_flash_attention_for_cpu`; counted as the CUDA kernels are).
    FlopCounterMode itself is not used: its module tracker's hooks break `torch.autograd.grad`
    inside a step (cardiac's eikonal term differentiates the SDF by its input points)."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.formulas = dict(flop_registry)
        for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_flops),
                              ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward_flops)):
            if hasattr(torch.ops.aten, name):
                self.formulas[getattr(torch.ops.aten, name)] = shape_wrapper(formula)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = self.formulas.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:  # as FlopCounterMode: an op without a formula may decompose into ops with one
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def reset_peak_memory(cuda: bool) -> str:
    """Start a new peak; returns what `peak_memory_bytes` will then measure."""
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return "torch.cuda.max_memory_allocated over the timed steps"
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return "peak resident memory (VmHWM) over the timed steps"
    except OSError:
        return "peak resident memory since the process started"


def peak_memory_bytes(cuda: bool) -> int:
    if cuda:
        return int(torch.cuda.max_memory_allocated())
    status = Path("/proc/self/status")
    match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.is_file() else None
    return int(match.group(1)) * 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024



# --- one row ----------------------------------------------------------------------------------------
def run_row(row: str, args: argparse.Namespace, work: Path) -> dict:
    from sensorium.engine.lightning_cli import SensoriumCLI
    from sensorium.recipes import resolve_config

    cuda = args.device == "cuda"
    config = resolve_config(row)
    paper = yaml.safe_load(config.read_text())
    accumulate = int(paper.get("trainer", {}).get("accumulate_grad_batches", 1))
    optimiser_steps = args.warmup + args.steps + 1  # the last one is counted, not timed
    plan = Plan(work=work, tiny=args.tiny, batch=args.batch_size, batches=accumulate * optimiser_steps + 1,
                workers=1 if args.tiny else (os.cpu_count() or 1),
                data_args=paper.get("data", {}).get("init_args", {}))
    clock_start = time.perf_counter()
    built = ROWS[row][1](plan)
    built_s = time.perf_counter() - clock_start

    # Model and datamodule as `sensorium fit` builds them from the YAML (and the seed it sets);
    # the CLI's own trainer is not used.
    accelerator = "gpu" if cuda else "cpu"
    cli = SensoriumCLI(args=["--config", str(config), "--data.root", str(built.data), *built.overrides,
                             "--trainer.accelerator", accelerator, "--trainer.devices", "1",
                             "--trainer.strategy", "auto", "--trainer.logger", "false",
                             "--run.root", str(work / "runs")], run=False)
    trainer_config = cli.config["trainer"]
    precision = str(trainer_config["precision"])
    if not cuda and precision.startswith("16"):
        precision = "bf16-mixed"  # fp16 matmuls on a CPU run at ~2 GFLOP/s
    clock = StepClock(args.warmup, args.steps, cuda)
    make_loader = cli.datamodule.train_dataloader
    cli.datamodule.train_dataloader = lambda: TimedBatches(make_loader(), clock)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, accumulate_grad_batches=accumulate,
        gradient_clip_val=trainer_config["gradient_clip_val"],
        gradient_clip_algorithm=trainer_config["gradient_clip_algorithm"],
        max_steps=optimiser_steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, default_root_dir=str(work / "runs"), callbacks=[clock])
    fit_start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - fit_start
    if clock.stop is None or clock.flops is None:
        raise RuntimeError(f"the fit ended after {trainer.global_step} of {optimiser_steps} optimiser steps")

    step_s = (clock.stop - clock.start) / args.steps
    samples = built.batch * accumulate
    result = {
        "row": row, "recipe": ROWS[row][0], "precision": precision, "batch": built.batch, "accumulate": accumulate,
        "samples_per_step": samples, "step_s": step_s, "samples_per_s": samples / step_s,
        "peak_memory_bytes": clock.peak_bytes, "peak_memory_kind": clock.memory_kind,
        "data_wait_share": clock.wait / (clock.stop - clock.start), "flops_per_step": clock.flops,
        "timed_batches": clock.batches, "build_s": built_s, "fit_s": fit_s, "stand_ins": built.stand_ins,
        "notes": built.notes,
        "num_workers": cli.datamodule.num_workers,
    }
    del cli, trainer
    return result


# --- the table ----------------------------------------------------------------------------------------
def device_name(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.is_file() else None
    cpu = model.group(1).strip() if model else (platform.processor() or "CPU")
    return f"{cpu} ({torch.get_num_threads()} threads)"


def add_mfu(row: dict, peak: float | None) -> dict:
    if "step_s" in row:
        row["achieved_tflops"] = row["flops_per_step"] / row["step_s"] / 1e12
        row["mfu"] = row["achieved_tflops"] / peak if peak else None
    return row


def _figures(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def format_table(rows: list[dict], header: str) -> str:
    columns = ["config", "batch", "step ms", "samples/s", "peak mem GiB", "data wait", "TFLOP/step", "TFLOP/s",
               "MFU", "build s", "fit s"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["row"], "failed: " + r["error"]])
            continue
        batch = f"{r['batch']}x{r['accumulate']}" if r["accumulate"] > 1 else str(r["batch"])
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        lines.append([r["row"], batch, f"{r['step_s'] * 1e3:.1f}", _figures(r["samples_per_s"]),
                      f"{r['peak_memory_bytes'] / 2**30:.2f}", f"{r['data_wait_share']:.0%}",
                      f"{r['flops_per_step'] / 1e12:.3g}", f"{r['achieved_tflops']:.3g}", mfu,
                      f"{r['build_s']:.0f}", f"{r['fit_s']:.0f}"])
    widths = [max([len(c)] + [len(line[i]) for line in lines if len(line) == len(columns)])
              for i, c in enumerate(columns)]
    out = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) if len(line) == len(columns)
            else f"{line[0].ljust(widths[0])}  {line[1]}" for line in lines]
    stand_ins = [f"  {r['row']}: {'; '.join(r['stand_ins'])}" for r in rows if r.get("stand_ins")]
    if stand_ins:
        out += ["stand-ins (nothing offline has the real ones):", *stand_ins]
    notes = [f"  {r['row']}: {'; '.join(r['notes'])}" for r in rows if r.get("notes")]
    if notes:
        out += ["notes:", *notes]
    return "\n".join(out)


def write_json(args: argparse.Namespace, device: str, peak: float | None, rows: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"device": device, "peak_tflops": peak, "steps": args.steps, "warmup": args.warmup, "tiny": args.tiny,
              "batch_size": args.batch_size, "torch": torch.__version__, "lightning": L.__version__,
              "python": sys.version.split()[0], "rows": rows}
    (args.out / "gpu_paper.json").write_text(json.dumps(result, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES),
                        help="recipes to run (doppler: its VAE and its DiT); default all five")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per row (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="optimiser steps before timing (default 5)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples per training batch in every row (default: each paper config's)")
    parser.add_argument("--tiny", action="store_true",
                        help="the torchrun test's tiny widths, frames and image sizes (for a CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: PEAK_TFLOPS by device name)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep data and random backbones here and reuse them (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT/gpu_paper.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:  # the first step starts workers and kernels: never timed
        parser.error("need --steps >= 1 and --warmup >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu (with --tiny for a run of minutes)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cuda = args.device == "cuda"
    name = device_name(cuda)
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    rows_wanted = [row for row, (recipe, _) in ROWS.items() if recipe in args.recipes]
    peak_text = f"peak {peak:g} TFLOP/s dense bf16" if peak else "peak unknown: MFU n/a (--peak-tflops)"
    header = (f"device: {name} ({peak_text}); {args.steps} timed steps after {args.warmup} warmup"
              f"{'; --tiny sizes' if args.tiny else ''}; torch {torch.__version__}, lightning {L.__version__}")
    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="gpu_paper_")
    work = args.work or Path(temporary.name)
    rows = []
    try:
        for row in rows_wanted:
            print(f"[gpu_paper] {row}: building data and model, then {args.warmup} + {args.steps} + 1 steps",
                  flush=True)
            try:
                rows.append(add_mfu(run_row(row, args, work), peak))
            except Exception as e:  # noqa: BLE001 - reported in the table and the exit code; the rest run
                traceback.print_exc()
                rows.append({"row": row, "recipe": ROWS[row][0], "error": f"{type(e).__name__}: {e}"[:300]})
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            # Each row as it ends: a run cut short still leaves the rows it finished.
            columns, line = format_table(rows[-1:], header).splitlines()[1:3]
            print(f"[gpu_paper] {columns}\n[gpu_paper] {line}", flush=True)
            if args.out:
                write_json(args, name, peak, rows)
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(format_table(rows, header))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
