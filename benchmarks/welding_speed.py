"""Speed of the machine and of the welding recipe, measured in one run:

1. matmul peak (fp32, bf16) of this machine: the yardstick;
2. training throughput (samples/s) of the welding demo model, fp32 and bf16-mixed;
3. a ViT-S-size encoder training step (dim 384, depth 12, 6 heads, 196 patches + cls) with its
   achieved FLOP/s as a fraction of the bf16 matmul peak (target >= 40%);
4. the data-loading rate (decoding from disk with DataLoader workers, no cache) against the
   training step rate of (2): loading must not be the bottleneck.

    python benchmarks/welding_speed.py [--threads N] [--data DIR]

Prints one table; numbers are measured here, now (close other work for clean numbers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def timed(fn, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = timed(lambda: a @ b, warmup=3, repeats=7)
    return 2 * n**3 / seconds / 1e9  # GFLOP/s


def train_step_fn(model: nn.Module, make_batch, loss_fn, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def flops_of(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


# --- the models ---------------------------------------------------------------------------------
def welding_model_and_batch(batch_size: int):
    import yaml

    from sensorium.config import as_config
    from sensorium.recipes import resolve_config
    from sensorium.recipes.welding.model import WeldingNet, WeldingNetConfig
    from sensorium.recipes.welding.reader import WeldingPreprocess

    p = WeldingPreprocess()
    demo = yaml.safe_load(resolve_config("welding/demo").read_text())
    net = WeldingNet(as_config(WeldingNetConfig, demo["model"]["init_args"]["net"]))  # the demo YAML's sizes

    def make_batch():
        return {"video": torch.rand(batch_size, p.num_frames, 3, p.frame_size, p.frame_size),
                "images": torch.rand(batch_size, p.num_images, 3, p.image_size, p.image_size),
                "audio": torch.randn(batch_size, 1, p.n_mels, p.audio_frames),
                "sensor": torch.randn(batch_size, p.sensor_length, len(p.sensor_columns)),
                "present": torch.ones(batch_size, 4, dtype=torch.bool),
                "label": torch.arange(batch_size) % 12}

    def loss_fn(model, batch):
        from sensorium.losses import supcon_loss

        return supcon_loss(model(batch).embedding[:, None], batch["label"], 0.1, 0.1)

    return net, make_batch, loss_fn


class ViTS(nn.Module):
    """A ViT-S/16-size encoder from sensorium's layers (patch conv, SDPA blocks)."""

    def __init__(self, dim=384, depth=12, heads=6, image=224, patch=16):
        super().__init__()
        from sensorium.layers.attention import TransformerBlock

        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 196, dim)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def vits_model_and_batch(batch_size: int):
    def make_batch():
        return torch.randn(batch_size, 3, 224, 224)

    def loss_fn(model, x):
        return model(x).float().pow(2).mean()

    return ViTS(), make_batch, loss_fn


# --- data loading -------------------------------------------------------------------------------
def loading_rate(data: Path, workers: int, batch_size: int, batches: int = 6) -> float:
    from torch.utils.data import DataLoader

    from sensorium.data.bad_samples import collate_skipping
    from sensorium.recipes.welding.reader import (
        WeldingDataset,
        WeldingPreprocess,
        compute_sensor_stats,
        read_manifest,
    )

    records = read_manifest(data)
    dataset = WeldingDataset(records, WeldingPreprocess(), compute_sensor_stats(records), cache=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_skipping, persistent_workers=workers > 0)
    batches = min(batches, len(loader) - 1)  # the first batch only starts the workers
    if batches < 1:
        raise SystemExit(f"{data}: {len(dataset)} samples are too few to time loading at batch {batch_size}")
    iterator = iter(loader)
    next(iterator)  # start the workers
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(iterator)["label"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data", type=Path, default=None, help="a welding dataset (default: synthesise one)")
    parser.add_argument("--vit-batch", type=int, default=16)
    parser.add_argument("--welding-batch", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    rows += [("matmul peak fp32", f"{peak32:.0f} GFLOP/s"), ("matmul peak bf16", f"{peak16:.0f} GFLOP/s")]

    welding_rate = {}
    for bf16 in (False, True):
        model, make_batch, loss_fn = welding_model_and_batch(args.welding_batch)
        step = train_step_fn(model, make_batch, loss_fn, bf16)
        seconds = timed(step, warmup=2, repeats=5)
        welding_rate[bf16] = args.welding_batch / seconds
        rows.append((f"welding demo model train, {'bf16-mixed' if bf16 else 'fp32'}",
                     f"{welding_rate[bf16]:.0f} samples/s ({seconds * 1000:.0f} ms/step, batch {args.welding_batch})"))

    for bf16 in (False, True):
        model, make_batch, loss_fn = vits_model_and_batch(args.vit_batch)
        step = train_step_fn(model, make_batch, loss_fn, bf16)
        flops = flops_of(step)
        seconds = timed(step, warmup=1, repeats=3)
        achieved = flops / seconds / 1e9
        peak = peak16 if bf16 else peak32
        rows.append((f"ViT-S/16 train step, {'bf16-mixed' if bf16 else 'fp32'}",
                     f"{args.vit_batch / seconds:.1f} img/s, {achieved:.0f} GFLOP/s = {achieved / peak:.0%} of "
                     f"{'bf16' if bf16 else 'fp32'} peak ({flops / 1e9:.0f} GFLOP/step)"))

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from sensorium.recipes.welding.synth import generate

            data = Path(tmp) / "welding"
            generate(data, seed=0, samples_per_class=24)  # 288 runs: 5 timed batches of 48
        for workers in (0, 2):
            rate = loading_rate(data, workers, args.welding_batch)
            fastest = max(welding_rate.values())
            rows.append((f"data loading, {workers} worker(s), no cache",
                         f"{rate:.0f} samples/s = {rate / fastest:.1f}x the fastest training rate"))

    width = max(len(name) for name, _ in rows)
    print(f"sensorium benchmark: welding ({args.threads} threads, torch {torch.__version__})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
