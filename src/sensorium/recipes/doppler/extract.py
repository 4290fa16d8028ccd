"""`sensorium extract doppler --vae RUN/checkpoints/best.ckpt --data PREPARED_DIR --out LATENTS_DIR`:
stage 2, the latents of every prepared image and their per-channel statistics.

Writes LATENTS_DIR/latents.safetensors: `{train,val,test}_mean` and `{train,val,test}_std` (N, C, h,
w), the posterior of each image given its user; `{train,val,test}_label` (N,) user indices; `channel_mean`,
`channel_std` (C,), the statistics of the TRAIN posterior means over images and positions, with
which the DiT normalises (z - mean) / std and sampling undoes it. LATENTS_DIR/latents.json records
the shape, the users, and which VAE checkpoint (path and content hash) and which prepared data
(fingerprint) the latents came from; the DiT carries that record into its checkpoint, so sampling
decodes with the VAE the DiT was trained for. Both files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sensorium.engine.checkpoint import atomic_write, atomic_write_json
from sensorium.errors import DataError
from sensorium.recipes.doppler.latents import channel_statistics, file_digest
from sensorium.recipes.doppler.reader import SPLITS, RealSpectrograms, to_signed, to_unit


@torch.no_grad()
def encode(task, pixels: torch.Tensor, labels: torch.Tensor,
           batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) of users `labels` -> posterior mean and std (N, z, h, w)."""
    means, stds = [], []
    conditional = bool(task.vae.num_classes)
    for x, y in zip(pixels.split(batch_size), labels.split(batch_size)):
        posterior = task.vae.encode(to_signed(to_unit(x)), y if conditional else None)
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means), torch.cat(stds)


def extract(vae_ckpt: str | Path, data_root: str | Path, out: str | Path, batch_size: int = 256) -> dict:
    """Encode a prepared dataset with a trained VAE; returns latents.json's content."""
    from safetensors.torch import save_file

    # Lightning comes with the tasks: imported when extracting, not for `--help`.
    from sensorium.recipes.doppler.stages import load_stage
    from sensorium.recipes.doppler.task import DopplerVAETask

    vae_ckpt, out = Path(vae_ckpt).resolve(), Path(out)
    task = load_stage(vae_ckpt, DopplerVAETask)
    hp = task.hparams
    real = RealSpectrograms(data_root, hp["image_size"], hp["channels"])
    if list(real.users) != list(hp["users"]):
        raise DataError(Path(data_root) / "prepare.json",
                        f"users {real.users} differ from the VAE's {hp['users']} ({vae_ckpt})")
    tensors = {}
    for split in SPLITS:
        if not len(real.labels[split]):
            continue  # e.g. no test split (prepared with --test-ratio 0): no test latents
        mean, std = encode(task, real.pixels[split], real.labels[split], batch_size)
        tensors.update({f"{split}_mean": mean, f"{split}_std": std, f"{split}_label": real.labels[split]})
    if "train_mean" not in tensors:
        raise DataError(Path(data_root) / "split.csv", "no training images to extract")
    tensors["channel_mean"], tensors["channel_std"] = channel_statistics(tensors["train_mean"])
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(out / "latents.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    meta = {
        "latent_shape": list(task.latent_shape),
        "users": list(hp["users"]),
        "counts": {split: len(real.labels[split]) for split in SPLITS},
        "channel_mean": tensors["channel_mean"].tolist(),
        "channel_std": tensors["channel_std"].tolist(),
        "vae": {"checkpoint": str(vae_ckpt), "digest": file_digest(vae_ckpt),
                "latent_shape": list(task.latent_shape), "users": list(hp["users"]),
                "image_size": hp["image_size"], "channels": hp["channels"]},
        "data": {"root": str(Path(data_root).resolve()), "fingerprint": real.info["fingerprint"]},
    }
    atomic_write_json(out / "latents.json", meta)
    return meta


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium extract doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", type=Path, required=True,
                        help="the stage-1 checkpoint (RUN/checkpoints/best.ckpt)")
    parser.add_argument("--data", type=Path, required=True, help="the prepared folder the VAE was trained on")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    with torch.no_grad():  # scoped: `sensorium.cli.main` runs in the caller's process (tests, notebooks)
        meta = extract(args.vae, args.data, args.out, args.batch_size)
    shape = "x".join(str(v) for v in meta["latent_shape"])
    counts = meta["counts"]
    print(f"[extract] {counts['train']} train + {counts['val']} val + {counts['test']} test latents of shape "
          f"{shape}; channel mean {[round(v, 3) for v in meta['channel_mean']]}, std "
          f"{[round(v, 3) for v in meta['channel_std']]} -> {args.out / 'latents.safetensors'}")
    return 0
