"""Frozen features computed once: an epoch of `welding/paper` with and without the feature cache, in one run.

    python benchmarks/welding_feature_cache.py [--threads 1] [--samples-per-class 3] [--layers 1]
                                               [--feature-dtype float16] [--keep DIR]

`welding/paper` as packaged (fusion of width 512, the sensor Transformer, SupCon, AdamW, bf16-mixed,
`image_views: mean`, k-NN validation of VAL against TRAIN each epoch), on CPU, with:

- backbones: randomly initialised `transformers` models of the paper's classes at the paper's widths
  (V-JEPA 2 as vitl-fpc64-256: 1024 wide, 16 heads, patch 16, tubelet 2; DINOv2-base: 768, patch 14;
  AST as ast-finetuned-audioset: 768, 128 mel, 1024 frames, stride 10), `--layers` deep (the real
  ones have 24 / 12 / 12). Their token counts are the paper's: 16 x 14 x 14 = 3136 for 32 frames at
  224 px, 5 angles x (16 x 16 + 1) = 5 x 257 for the photos (mean over the angles: 257), and
  12 x 101 + 2 = 1214 for the audio; the fusion reads the paper's token shapes. With one layer a
  backbone costs 1/24 (video) and 1/12 of the real one, so the measured speedup is a floor.
- data: `sensorium synth welding` at the paper's preprocessing sizes (224 px videos of 32 frames, five
  224 px photos, 10.24 s of audio), `--samples-per-class` runs of each of the 12 classes; the
  synthetic manifest's TEST rows become VAL (the paper validates on the manifest's VAL rows).
- batches: `--classes-per-batch` x `--per-class` (paper: 8 x 4 = 32; the default 12 x 2 = 24 keeps
  one epoch to one batch of the small dataset), DataLoader workers 0, one thread.

Printed: one epoch (training, then k-NN validation over TRAIN) reading raw inputs and running the
backbones; the cache's build (separately: once per checkpoint, preprocessing and dataset) and its
check at the next start; the same epoch reading the cache, from the same initial weights and
batches. Each in wall-clock seconds and in this process's CPU seconds: at one thread and no
DataLoader workers the CPU time is the work done, the number to compare on a machine that also runs
other jobs. Then the embeddings of the same weights (after the uncached epoch) of every validation
sample and of the k-NN bank, through both paths: the largest absolute difference (tolerance 5e-3:
float16 storage rounds the tokens to 11 significant bits, and the fusion runs in bf16, which rounds
to 8) and whether every k-NN prediction agrees; and the two epochs' training losses.
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

TOLERANCE = 5e-3


def tiny_backbones(out: Path, layers: int) -> dict[str, str]:
    """The paper's three backbones at their widths and token counts, `layers` deep, random weights."""
    from transformers import ASTConfig, ASTModel, Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    models = {
        "video": VJEPA2Model(VJEPA2Config(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
                                          mlp_ratio=4.0, crop_size=256, patch_size=16, frames_per_clip=64,
                                          tubelet_size=2, pred_hidden_size=64, pred_num_attention_heads=2,
                                          pred_num_hidden_layers=1)),
        "images": Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                                           intermediate_size=3072, image_size=518, patch_size=14)),
        "audio": ASTModel(ASTConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                                    intermediate_size=3072, max_length=1024, num_mel_bins=128, frequency_stride=10,
                                    time_stride=10, patch_size=16)),
    }
    paths = {}
    for modality, model in models.items():
        paths[modality] = str(out / modality)
        model.save_pretrained(paths[modality])
    return paths


def synthetic_data(out: Path, samples_per_class: int) -> Path:
    """Paper-size synthetic runs; the manifest's TEST rows relabelled VAL."""
    from sensorium.recipes.welding.synth import SynthSizes, generate

    sizes = SynthSizes(video_size=224, video_frames=32, image_size=224, num_images=5, audio_seconds=10.24)
    manifest = generate(out, seed=0, samples_per_class=samples_per_class, test_fraction=1 / samples_per_class,
                        sizes=sizes)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["SPLIT"] = "VAL" if row["SPLIT"] == "TEST" else row["SPLIT"]
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time): at one thread and no DataLoader workers the CPU time is
    the work done, whatever else the machine runs; the wall clock is what a user waits."""
    return time.perf_counter(), time.process_time()


class EpochClock(L.Callback):
    """Seconds (wall, CPU) of an epoch's training part and of its validation; the validation
    embeddings (bank: dataloader 0, queries: 1) as the task gathered them (read before the task's own
    epoch-end hook consumes them)."""

    def __init__(self):
        self.marks: dict[str, tuple[float, float]] = {}
        self.embeddings: dict[int, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.marks["train"] = _now()

    def on_validation_start(self, trainer, pl_module):
        self.marks["val"] = _now()

    def on_validation_epoch_end(self, trainer, pl_module):  # Lightning calls callbacks before the module
        self.embeddings = {i: torch.cat([p["embedding"] for p in parts]).float()
                           for i, parts in pl_module._eval_parts.items()}

    def on_validation_end(self, trainer, pl_module):
        self.marks["val_end"] = _now()

    def seconds(self, clock: int) -> dict[str, float]:
        """clock 0: wall, 1: CPU."""
        m = self.marks
        train, val = m["val"][clock] - m["train"][clock], m["val_end"][clock] - m["val"][clock]
        return {"train": train, "val": val, "epoch": train + val}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples-per-class", type=int, default=3, help="runs per class; one of them VAL")
    parser.add_argument("--classes-per-batch", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=2, help="samples per class in a batch (paper: 4)")
    parser.add_argument("--layers", type=int, default=1, help="layers of each backbone (paper: 24 / 12 / 12)")
    parser.add_argument("--feature-dtype", choices=("float16", "float32"), default="float16",
                        help="the cache's dtype (data.feature_dtype)")
    parser.add_argument("--keep", type=Path, default=None, help="write data, backbones and cache here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    import yaml

    from sensorium.eval.knn import knn_predict
    from sensorium.recipes import resolve_config
    from sensorium.recipes.welding.datamodule import WeldingDataModule
    from sensorium.recipes.welding.task import WeldingTask

    paper = yaml.safe_load(resolve_config("welding/paper").read_text())
    precision = paper["trainer"]["precision"]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        data = synthetic_data(out / "data", args.samples_per_class)
        backbones = tiny_backbones(out / "backbones", args.layers)
        setup_seconds = time.perf_counter() - start

        model_args = copy.deepcopy(paper["model"]["init_args"])
        for modality, path in backbones.items():
            model_args["net"][modality]["pretrained"] = path
        data_args = {**paper["data"]["init_args"], "root": str(data), "num_workers": 0, "feature_dtype": args.feature_dtype,
                     "classes_per_batch": args.classes_per_batch, "samples_per_class": args.per_class}

        def datamodule(cache: Path | None) -> WeldingDataModule:
            return WeldingDataModule(**{**data_args, "feature_cache": str(cache) if cache else None})

        def trainer(clock) -> L.Trainer:
            return L.Trainer(accelerator="cpu", devices=1, precision=precision, max_epochs=1,
                             gradient_clip_val=paper["trainer"]["gradient_clip_val"], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, callbacks=[clock])

        torch.manual_seed(0)
        task = WeldingTask(**model_args)
        initial = copy.deepcopy(task.state_dict())

        # 1. An epoch without the cache: every batch decodes its inputs and runs the backbones.
        L.seed_everything(0, verbose=False)
        raw_clock = EpochClock()
        trainer(raw_clock).fit(task, raw := datamodule(None))
        raw_loss = float(task.trainer.callback_metrics["train/loss_epoch"])
        trained = copy.deepcopy(task.state_dict())

        # 2. The cache: built once (timed on its own), then checked at the next start.
        cache_dir = out / "features"
        cached = datamodule(cache_dir)
        cached.setup("fit")
        cached.attach_frozen_encoders(task.frozen_encoders())

        def context():  # the autocast the Trainer runs the encoders in
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

        begin = _now()
        stores = cached.feature_stores(precision=precision, context=context)
        build_seconds = [after - before for after, before in zip(_now(), begin, strict=True)]
        cached.attach_frozen_encoders(task.frozen_encoders())
        begin = time.perf_counter()
        cached.feature_stores(precision=precision, context=context)
        check_seconds = time.perf_counter() - begin
        size = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())

        # 3. The same weights through both paths: the cached validation of the uncached epoch's weights.
        same_clock = EpochClock()
        trainer(same_clock).validate(task, cached, verbose=False)
        difference = max((same_clock.embeddings[i] - raw_clock.embeddings[i]).abs().max().item() for i in (0, 1))
        knn, labels = model_args["knn"], raw.datasets["train"].labels  # the bank, in loader order
        raw_pred, cached_pred = (knn_predict(e[0], labels, e[1], knn["k"], knn["temperature"], 12, votes=knn["votes"],
                                             metric=knn["metric"]) for e in (raw_clock.embeddings, same_clock.embeddings))
        agree = torch.equal(raw_pred, cached_pred)

        # 4. An epoch reading the cache, from the same initial weights and batches as (1).
        task.load_state_dict(initial)
        L.seed_everything(0, verbose=False)
        cached_clock = EpochClock()
        trainer(cached_clock).fit(task, datamodule(cache_dir))
        cached_loss = float(task.trainer.callback_metrics["train/loss_epoch"])
        weights = max((task.state_dict()[k].float() - v.float()).abs().max().item() for k, v in trained.items())

    train_n, val_n = len(raw.datasets["train"]), len(raw.datasets["val"])
    tokens = ", ".join(f"{m} {list(s.token_shape)}" for m, s in stores.items())
    print(f"sensorium benchmark: welding/paper frozen-feature cache ({torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, {precision}, CPU)")
    print(f"  backbones: V-JEPA 2 / DINOv2 / AST at the paper's widths, {args.layers} layer(s) each (paper 24/12/12); "
          f"tokens per sample {tokens}")
    print(f"  data: {train_n} TRAIN + {val_n} VAL runs at the paper's sizes; batch {args.classes_per_batch} x "
          f"{args.per_class}; an epoch = {len(raw._train_sampler(1, 0))} training batch(es) + k-NN validation "
          f"({train_n} bank + {val_n} queries); synthetic data and backbones written in {setup_seconds:.0f} s")
    for clock, what in ((0, "wall clock"), (1, "CPU time")):
        r, c = raw_clock.seconds(clock), cached_clock.seconds(clock)
        print(f"  {what:<22}{'training':>10}{'validation':>12}{'epoch':>9}")
        for name, s in (("epoch, no cache", r), ("epoch, cached", c)):
            print(f"  {name:<22}{s['train']:>9.1f}s{s['val']:>11.1f}s{s['epoch']:>8.1f}s")
        print(f"  {'speedup':<22}{r['train'] / c['train']:>9.1f}x{r['val'] / c['val']:>11.1f}x"
              f"{r['epoch'] / c['epoch']:>8.1f}x   (target >= 5x)")
    print(f"  cache: built in {build_seconds[0]:.1f} s ({build_seconds[1]:.1f} s CPU; {len(stores)} stores, "
          f"{size / 1e6:.0f} MB, {stores['video'].dtype}), checked at the next start in {check_seconds:.2f} s")
    status = "same" if difference <= TOLERANCE and agree else "DIFFERENT"
    print(f"  same weights, both paths: max |embedding difference| {difference:.2e} (tolerance {TOLERANCE:g}), "
          f"k-NN predictions {'identical' if agree else 'differ'}: {status}")
    print(f"  the two epochs from the same start: train loss {raw_loss:.5f} vs {cached_loss:.5f}, "
          f"largest weight difference after it {weights:.2e}")


if __name__ == "__main__":
    main()
