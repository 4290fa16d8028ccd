"""Reading feature packs: one random window from zarr packs vs `torch.load` of the same data as one .pt
per episode (the design note's path), and the share of a demo training step spent waiting for data.

    python benchmarks/rgbpc_packs.py --out DIR [--gigabytes 2.2] [--data DEMO_DATA] [--steps 120] [--keep]

1. Writes packs of DINO-sized features (16 x 16 cells x 768 channels, float16: 393 KB a frame) for
   `--gigabytes` of frames in episodes of 700 frames, and the same features as one .pt per episode
   (`per_frame_features` [F, Hf, Wf, C], no duplicated windows: the same bytes).
2. Times reading one random window of 8 frames, p50 / p95 over `--reads` windows: from the zarr packs
   with the page cache dropped (a first epoch; each pack opened at its first read), the same windows
   again from the page cache with the packs open (what a DataLoader worker does after that; also
   through zarr-python, which `FeaturePack.frames` bypasses for uncompressed packs), and
   through torch.load of the episode's .pt followed by the slice (the
   note's training loop loaded whole episode files).
3. With the demo's data (`--data`, e.g. DEMO_OUT/data from `sensorium demo rgbpc`; synthesised small
   when absent) and the demo YAML's model and batch, runs `--steps` training steps with the
   datamodule's DataLoader at 0 and 2 workers and reports the share of each step spent waiting for the
   next batch, each after reading the data once into the page cache (the demo trains on data it has
   just written).

The packs are deleted at the end unless --keep. Timings depend on the machine and its load: the
script prints the load average next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

GRID, CHANNELS, WINDOW, EPISODE_FRAMES = (16, 16), 768, 8, 700


def write_data(out: Path, gigabytes: float, seed: int = 0) -> dict:
    from sensorium.data.image_grid import GridTransform
    from sensorium.data.packs import PackWriter

    frame_bytes = GRID[0] * GRID[1] * CHANNELS * 2
    frames = int(np.ceil(gigabytes * 1e9 / frame_bytes))
    episodes = int(np.ceil(frames / EPISODE_FRAMES))
    rng = np.random.default_rng(seed)
    transform = GridTransform.resize_center_crop((480, 640), (256, 341), (224, 224), 14)
    started = time.perf_counter()
    for e in range(episodes):
        paths = [f"bench/episode_{e:03d}/step_{i:04d}.png" for i in range(EPISODE_FRAMES)]
        features = np.empty((EPISODE_FRAMES, *GRID, CHANNELS), dtype=np.float16)
        for start in range(0, EPISODE_FRAMES, 100):
            features[start:start + 100] = rng.standard_normal((100, *GRID, CHANNELS), dtype=np.float32)
        with PackWriter(out / "packs" / f"episode_{e:03d}.zarr", paths, transform, CHANNELS, "dinov2-like",
                        window=WINDOW, window_stride=4) as pack:
            for start in range(0, EPISODE_FRAMES, 100):
                pack.write(start, features[start:start + 100])
        torch.save({"per_frame_features": torch.from_numpy(features), "frame_paths": paths,
                    "meta": transform.to_dict()}, out / "pt" / f"episode_{e:03d}.pt")
    size = sum(f.stat().st_size for f in (out / "packs").rglob("*") if f.is_file())
    pt_size = sum(f.stat().st_size for f in (out / "pt").glob("*.pt"))
    return {"episodes": episodes, "frames": episodes * EPISODE_FRAMES, "pack_bytes": size, "pt_bytes": pt_size,
            "write_seconds": round(time.perf_counter() - started, 1)}


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the files' cached pages (posix_fadvise), so reads hit the disk as a
    first epoch would; best effort."""
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def time_reads(out: Path, episodes: int, reads: int, seed: int = 1) -> dict:
    """p50 / p95 of reading one random window: cold (page cache dropped; the pack opened for the read),
    warm (the same windows again, packs kept open as a DataLoader worker keeps them), and through
    torch.load of the episode's .pt followed by the slice."""
    from sensorium.data.packs import open_pack

    rng = np.random.default_rng(seed)
    picks = [(int(rng.integers(episodes)), int(rng.integers(EPISODE_FRAMES - WINDOW))) for _ in range(reads)]

    def percentiles(ms: list[float]) -> dict:
        return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "reads": len(ms)}

    cold_ms, packs = [], {}
    for e, start in picks:
        t = time.perf_counter()
        pack = packs.setdefault(e, open_pack(out / "packs" / f"episode_{e:03d}.zarr"))
        window = pack.frames(start, start + WINDOW)
        cold_ms.append((time.perf_counter() - t) * 1e3)
        assert window.shape == (WINDOW, *GRID, CHANNELS)
    warm_ms, zarr_ms = [], []
    for e, start in picks:
        t = time.perf_counter()
        packs[e].frames(start, start + WINDOW)
        warm_ms.append((time.perf_counter() - t) * 1e3)
    for e, start in picks:  # the same reads through zarr-python (what frames() does for compressed packs)
        t = time.perf_counter()
        np.asarray(packs[e].features[start:start + WINDOW])
        zarr_ms.append((time.perf_counter() - t) * 1e3)
    pt_ms = []
    for e, start in picks[: max(5, reads // 20)]:  # each load reads a whole episode: fewer of them
        t = time.perf_counter()
        content = torch.load(out / "pt" / f"episode_{e:03d}.pt", weights_only=True)
        window = content["per_frame_features"][start:start + WINDOW].clone()
        pt_ms.append((time.perf_counter() - t) * 1e3)
        del content
    return {"zarr_window_ms": percentiles(cold_ms), "zarr_window_warm_ms": percentiles(warm_ms),
            "zarr_python_window_warm_ms": percentiles(zarr_ms), "pt_window_ms": percentiles(pt_ms)}


def demo_data(path: Path | None, scratch: Path) -> Path:
    if path is not None and (path / "features").is_dir():
        return path
    from sensorium.recipes.rgbpc.extract import extract
    from sensorium.recipes.rgbpc.synth import SynthConfig, generate

    root = scratch / "demo_data"
    generate(root, seed=0, config=SynthConfig(episodes_per_task=24))
    extract(root / "rgb", root / "features", ["shape8", "vit16"], window=8, window_stride=2, progress=False)
    return root


def warm_page_cache(root: Path) -> float:
    """Read every file under root once, as the demo finds its data just after writing it (the packs above
    and their deletion may have pushed it out of the page cache); seconds taken."""
    started = time.perf_counter()
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                while handle.read(1 << 22):
                    pass
    return time.perf_counter() - started


def data_wait(root: Path, workers: int, steps: int) -> dict:
    """Training steps of the demo model on the demo datamodule: share of wall time spent in next(loader)."""
    import yaml

    from sensorium.recipes import resolve_config
    from sensorium.recipes.rgbpc.datamodule import RgbpcDataModule
    from sensorium.recipes.rgbpc.task import AlignTask

    config = yaml.safe_load(resolve_config("rgbpc/demo").read_text())
    data_args = {**config["data"]["init_args"], "root": str(root), "num_workers": workers, "batches_per_epoch": None}
    datamodule = RgbpcDataModule(**data_args)
    datamodule.setup("fit")
    model_args = config["model"]["init_args"]
    torch.manual_seed(0)
    task = AlignTask(net=model_args["net"], loss=model_args["loss"], optim=model_args["optim"])
    optimiser = torch.optim.AdamW(task.parameters(), lr=1e-3)
    waits, totals = [], []
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    for step in range(steps + 3):
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.stack(list(task.training_losses(batch).values())).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        t2 = time.perf_counter()
        if step >= 3:  # the first batches start the workers
            waits.append(t1 - t0)
            totals.append(t2 - t0)
    return {"workers": workers, "steps": steps, "step_ms": float(np.mean(totals) * 1e3),
            "wait_ms": float(np.mean(waits) * 1e3), "wait_share": float(np.sum(waits) / np.sum(totals))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gigabytes", type=float, default=2.2)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--data", type=Path, default=None, help="the demo's data (DEMO_OUT/data)")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--keep", action="store_true", help="keep the packs and .pt files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out
    (out / "packs").mkdir(parents=True, exist_ok=True)
    (out / "pt").mkdir(parents=True, exist_ok=True)
    result = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    try:
        result["written"] = write_data(out, args.gigabytes)
        print(f"[bench] wrote {result['written']['pack_bytes'] / 1e9:.2f} GB of packs and "
              f"{result['written']['pt_bytes'] / 1e9:.2f} GB of .pt ({result['written']['episodes']} episodes, "
              f"{result['written']['frames']} frames) in {result['written']['write_seconds']} s", flush=True)
        drop_page_cache(out)
        result["reads"] = time_reads(out, result["written"]["episodes"], args.reads)
        z, w, zp, p = (result["reads"][k] for k in ("zarr_window_ms", "zarr_window_warm_ms",
                                                     "zarr_python_window_warm_ms", "pt_window_ms"))
        print(f"[bench] one random window of {WINDOW} frames ({WINDOW * GRID[0] * GRID[1] * CHANNELS * 2 / 2**20:.1f} "
              f"MiB): zarr pack from disk p50 {z['p50']:.2f} ms, p95 {z['p95']:.2f} ms; from the page cache, pack "
              f"open p50 {w['p50']:.2f} ms, p95 {w['p95']:.2f} ms (through zarr-python p50 {zp['p50']:.2f} ms, "
              f"p95 {zp['p95']:.2f} ms; {z['reads']} reads each); torch.load of the episode's .pt p50 "
              f"{p['p50']:.0f} ms, p95 {p['p95']:.0f} ms ({p['reads']} loads)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(out / "packs", ignore_errors=True)
            shutil.rmtree(out / "pt", ignore_errors=True)
    root = demo_data(args.data, out)
    result["data_wait"] = []
    for workers in (0, 2):
        seconds = warm_page_cache(root)
        print(f"[bench] read the demo data once into the page cache ({seconds:.1f} s)", flush=True)
        result["data_wait"].append(data_wait(root, workers, args.steps))
    for r in result["data_wait"]:
        print(f"[bench] demo training step, {r['workers']} workers: {r['step_ms']:.0f} ms per step, "
              f"{r['wait_ms']:.1f} ms waiting for data ({r['wait_share']:.1%})", flush=True)
    result["load_average_end"] = os.getloadavg()
    print(f"[bench] load average {result['load_average_start'][0]:.2f} -> {result['load_average_end'][0]:.2f} on "
          f"{result['cpu_count']} cores")
    (out / "rgbpc_packs.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
