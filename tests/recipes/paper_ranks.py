"""Test-only pieces of test_paper_torchrun.py: a callback that records what each rank saw, and per
recipe the tiny data (in the recipe's real on-disk layout, from its own synthetic generator and
prepare / extract steps) with the command-line overrides that shrink its paper YAML.

The overrides change SIZES only (widths, depths, heads, batch sizes, points, image sizes, worker
counts, evaluation sample counts) and point every pretrained encoder at a tiny randomly initialised
`transformers` checkpoint saved next to the data. One more: tactile and cardiac validate every 5th
epoch in the paper, here every epoch, so that a one-epoch run validates once. Everything else
(losses, optimiser, schedules, fusion and attention modes, loggers, early stopping) is the paper's;
the launch settings (accelerator, devices, strategy, precision, accumulation, epochs) are the test's.

The callback is named on the command line of the launched run
(`--trainer.callbacks+=paper_ranks.DumpRankMetrics`, with this folder on PYTHONPATH) and writes one
JSON line per training epoch end and validation pass to $PAPER_RANKS_DIR/rank<global rank>.jsonl.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

DUMP_ENV = "PAPER_RANKS_DIR"


class DumpRankMetrics(L.Callback):
    """Each rank's epoch-level metrics, training batches and optimiser steps: one record per
    training epoch end and per validation pass (not the sanity check).

    A metric is epoch-level when it was logged with `on_epoch=True`; its key in `callback_metrics`
    is then `<name>_epoch` (logged per step too) or `<name>`. A bare key may also hold a step-only
    value (this rank's last step, which ranks are free to disagree on), so which keys are
    epoch-level is read from the logging metadata in the trainer's result collection (Lightning's
    private `trainer._results`; pyproject pins lightning<2.7).
    """

    def __init__(self) -> None:
        self.batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Called before the module's own on_train_epoch_end: no recipe logs there (a metric logged
        # there would be missed, not misjudged).
        self._dump(trainer, "train", batches=self.batches)

    def on_validation_end(self, trainer, pl_module) -> None:
        # After the module's on_validation_epoch_end, where every recipe logs its validation metrics.
        if not trainer.sanity_checking:
            self._dump(trainer, "val")

    @staticmethod
    def _epoch_keys(trainer) -> list[str]:
        """The `callback_metrics` keys of this stage's epoch-level metrics."""
        results = trainer._results
        metrics = results.values() if results is not None else ()
        return [results._forked_name(m, on_step=False)[1] for m in metrics if m.meta.on_epoch]

    def _dump(self, trainer, stage: str, **extra) -> None:
        folder = os.environ.get(DUMP_ENV)
        if not folder:
            return
        values = trainer.callback_metrics  # computes (and, where logged so, syncs) the epoch values
        keys = self._epoch_keys(trainer)
        metrics = {k: float(values[k]) for k in keys if k in values and values[k].numel() == 1}
        record = {"stage": stage, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                  "world_size": trainer.world_size, "metrics": metrics, **extra}
        path = Path(folder) / f"rank{trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_dump(folder: Path, rank: int) -> list[dict]:
    path = Path(folder) / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# --- tiny pretrained checkpoints --------------------------------------------------------------------
def _save(model, directory: Path) -> str:
    model.save_pretrained(directory)
    return str(directory)


def _tiny_dinov2(directory: Path, hidden: int, image_size: int, patch: int) -> str:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=2 * hidden, image_size=image_size, patch_size=patch)
    return _save(Dinov2Model(config), directory)


# --- per recipe: tiny data + size overrides ---------------------------------------------------------
# Each builder writes its data under `root` and returns (data root, overrides). The data are sized so
# that ONE process's epoch is 4 training batches (2 optimiser steps at accumulate_grad_batches 2): an
# epoch must keep that length on 2 ranks, so the test limits no batches.
def welding(root: Path) -> tuple[Path, list[str]]:
    from transformers import ASTConfig, ASTModel, VJEPA2Config, VJEPA2Model

    from sensorium.recipes.welding.synth import SynthSizes, generate

    # 12 classes x 4 runs: 1 TEST and 3 TRAIN, of which val_fraction 0.1 carves 1 -> 24 train, 12 val.
    sizes = SynthSizes(video_size=32, video_frames=8, image_size=32, num_images=2, audio_seconds=0.4)
    generate(root / "data", seed=0, samples_per_class=4, sizes=sizes)
    # V-JEPA 2 on 4 frames of 32 px, DINOv2 on 32 px images, AST on 16 mel bins x 32 frames: the
    # shapes that the preprocess override below gives them.
    torch.manual_seed(0)
    vjepa = VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, crop_size=32,
                         patch_size=16, frames_per_clip=4, tubelet_size=2, pred_hidden_size=32,
                         pred_num_attention_heads=2, pred_num_hidden_layers=1)
    ast = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_length=32, num_mel_bins=16)
    vjepa, ast = _save(VJEPA2Model(vjepa), root / "vjepa2"), _save(ASTModel(ast), root / "ast")
    dinov2 = _tiny_dinov2(root / "dinov2", hidden=32, image_size=32, patch=16)
    net = "--model.init_args.net."
    return root / "data", [
        f"{net}video.pretrained", vjepa, f"{net}images.pretrained", dinov2, f"{net}audio.pretrained", ast,
        f"{net}sensor", "{width: 16, depth: 1, heads: 2, patch: 8}",
        f"{net}fusion_dim", "32", f"{net}fusion_tokens", "2", f"{net}fusion_heads", "2",
        f"{net}embed_dim", "32",
        # 3 classes x 2 = batch 6: 24 // 6 = 4 batches an epoch
        "--data.init_args.classes_per_batch", "3", "--data.init_args.samples_per_class", "2",
        "--data.init_args.preprocess",
        ("{num_frames: 4, frame_size: 32, num_images: 2, image_size: 32, n_mels: 16, audio_frames: 32, "
         "sensor_length: 64}"),
        "--data.init_args.eval_batch_size", "16", "--data.init_args.num_workers", "0",
        # The paper validates on the manifest's VAL rows; `sensorium synth welding` writes TRAIN and
        # TEST only, so validation is carved from TRAIN here (a data choice, not a size: the one
        # override that is not a size).
        "--data.init_args.val_split", "null", "--data.init_args.val_fraction", "0.1",
    ]


def tactile(root: Path) -> tuple[Path, list[str]]:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from sensorium.recipes.tactile.synth import generate

    # 9 objects of 4-frame recordings -> 27 windows, split by object: 21 train, 3 val, 3 test.
    generate(root / "data", seed=0, items_indoor=6, items_outdoor=3, frames=4, size=32)
    torch.manual_seed(0)
    clip = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            image_size=32, patch_size=8)
    clip = _save(CLIPVisionModel(clip), root / "clip")
    model = "--model.init_args.model."
    return root / "data", [
        f"{model}pretrained", clip, f"{model}img_size", "32", f"{model}patch_size", "8",
        f"{model}decoder_embed_dim", "16", f"{model}decoder_depth", "1", f"{model}decoder_num_heads", "2",
        # 21 // 5 = 4 batches an epoch
        "--data.init_args.image_size", "32", "--data.init_args.batch_size", "5",
        "--data.init_args.eval_batch_size", "8", "--data.init_args.num_workers", "0",
        "--trainer.check_val_every_n_epoch", "1",
    ]


def cardiac(root: Path) -> tuple[Path, list[str]]:
    from sensorium.recipes.cardiac.prepare import PrepareConfig, run
    from sensorium.recipes.cardiac.synth import generate

    generate(root / "raw", seed=0, cases=6, shape=(44, 44, 33), spacing=(3.0, 3.0, 4.0))
    points = PrepareConfig(surface_points=512, volume_points=256, near_points=256, grid_resolution=12)
    run(root / "raw", root / "data", points, val_fraction=0.25, progress=False)  # 4 train cases, 2 val
    net, loss = "--model.init_args.net.", "--model.init_args.loss."
    evaluation = "--model.init_args.evaluation."
    return root / "data", [
        f"{net}dim", "32", f"{net}num_latents", "8", f"{net}depth", "1", f"{net}head_dim", "16",
        f"{net}num_freqs", "4", f"{net}kl_dim", "4",
        f"{loss}surface_queries", "64", f"{loss}eikonal_points", "32",
        f"{evaluation}grid_resolution", "16", f"{evaluation}mesh_samples", "500",
        f"{evaluation}render_cases", "1", f"{evaluation}query_chunk", "4096",
        "--data.init_args.sampling", "{surface_points: 256, volume_points: 128, near_points: 128}",
        # 4 // 1 = 4 batches an epoch
        "--data.init_args.batch_size", "1", "--data.init_args.eval_batch_size", "1",
        "--data.init_args.num_workers", "0",
        "--trainer.check_val_every_n_epoch", "1",
    ]


def rgbpc(root: Path) -> tuple[Path, list[str]]:
    from sensorium.recipes.rgbpc.extract import extract
    from sensorium.recipes.rgbpc.synth import SynthConfig, generate

    data = root / "data"
    generate(data, seed=0, config=SynthConfig(episodes_per_task=4, steps=10, image_size=(32, 48), points=128))
    # The paper's four frozen encoders, each a tiny random DINOv2 behind `NAME=hf:DIR` (widths in the
    # paper's 1:1:1:2), extracted into packs as `sensorium extract rgbpc` does.
    widths = {"dinov3": 16, "da3": 16, "croco": 16, "vggt": 32}
    specs = [f"{name}=hf:{_tiny_dinov2(root / name, hidden=width, image_size=32, patch=8)}"
             for name, width in widths.items()]
    extract(data / "rgb", data / "features", specs, window=8, window_stride=2, resize=(32, 48),
            progress=False)
    net, data_args = "--model.init_args.net.", "--data.init_args."
    return data, [
        f"{net}encoders", "{" + ", ".join(f"{k}: {w}" for k, w in widths.items()) + "}",
        f"{net}dim", "16", f"{net}adapter_hidden", "16", f"{net}pc_dim", "32", f"{net}set_tokens", "8",
        "--model.init_args.evaluation.action_steps", "20", "--model.init_args.evaluation.action_seeds", "1",
        # 6 training episodes -> 12 windows; 12 // 3 = 4 batches an epoch
        f"{data_args}points", "16", f"{data_args}batch_size", "3", f"{data_args}eval_windows", "4",
        f"{data_args}eval_points", "8", f"{data_args}action_points", "16",
        f"{data_args}action_train_episodes", "6", f"{data_args}num_workers", "0",
    ]


def doppler(root: Path) -> tuple[Path, list[str]]:
    from sensorium.recipes.doppler.prepare import prepare
    from sensorium.recipes.doppler.synth import generate

    generate(root / "raw", users=3, per_user=8, seed=0)
    prepare(root / "raw", root / "data", val_ratio=0.25, test_ratio=0.0)  # 18 train, 6 val (no test: unread)
    dinov2 = _tiny_dinov2(root / "dinov2", hidden=16, image_size=16, patch=4)
    net, loss, vf = "--model.init_args.net.", "--model.init_args.loss.", "--model.init_args.vf."
    return root / "data", [
        # Five levels as the paper's f16 tokenizer: 64 px -> a 4x4 latent, DINOv2's 16 px / patch 4 grid.
        f"{net}widths", "[8, 8, 8, 8, 8]", f"{net}z_channels", "4", f"{net}cond_dim", "8",
        f"{loss}disc_width", "8", f"{loss}disc_layers", "2",
        f"{vf}pretrained", dinov2, f"{vf}input_size", "16",
        # 18 // 4 = 4 batches an epoch
        "--data.init_args.image_size", "64", "--data.init_args.batch_size", "4",
        "--data.init_args.eval_batch_size", "4", "--data.init_args.num_workers", "0",
    ]


BUILDERS: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {
    "welding": welding, "tactile": tactile, "cardiac": cardiac, "rgbpc": rgbpc, "doppler": doppler,
}
