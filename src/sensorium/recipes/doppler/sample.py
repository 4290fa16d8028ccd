"""`sensorium sample doppler --ckpt DIT.ckpt --users 1 2 3 --per-user N --cfg 4.0 --out DIR`: generated
spectrograms in the `ID_k` layout (`DIR/ID_k/gen_XXXX.png`), so they plug into the same reader.

The DiT checkpoint names the VAE checkpoint its latents came from (path and content hash); `--vae`
points elsewhere when the file moved. Every mismatch is an error naming the file, never a silent
fallback to random weights: no DiT checkpoint, a checkpoint of the wrong stage, weights that do not
fit their network, a VAE whose latent shape or users differ from the DiT's, a VAE file whose content
is not the one the DiT was trained on, and user ids the model does not know.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sensorium.engine.checkpoint import atomic_write, atomic_write_json
from sensorium.errors import ConfigError
from sensorium.recipes.doppler.dit_task import DopplerDiTTask
from sensorium.recipes.doppler.latents import file_digest
from sensorium.recipes.doppler.reader import from_signed, to_pixels
from sensorium.recipes.doppler.stages import load_stage
from sensorium.recipes.doppler.task import DopplerVAETask


class Generator:
    """A trained DiT and the VAE that decodes its latents: user ids in, uint8 spectrograms out."""

    def __init__(self, dit: DopplerDiTTask, vae: DopplerVAETask):
        dit_shape, vae_shape = list(dit.hparams["latent_shape"]), list(vae.latent_shape)
        where = getattr(vae, "checkpoint_path", "vae")
        if dit_shape != vae_shape:
            raise ConfigError(where, f"the VAE's latents are {'x'.join(map(str, vae_shape))} but the DiT "
                                     f"({getattr(dit, 'checkpoint_path', 'dit')}) was trained on "
                                     f"{'x'.join(map(str, dit_shape))}")
        if list(dit.hparams["users"]) != list(vae.hparams["users"]):
            raise ConfigError(where, f"the VAE's users {vae.hparams['users']} differ from the DiT's "
                              f"{dit.hparams['users']}")
        self.dit, self.vae = dit.eval(), vae.eval()
        self.users: list[int] = list(dit.hparams["users"])

    @classmethod
    def from_checkpoints(cls, dit_ckpt: str | Path | None, vae_ckpt: str | Path | None = None) -> Generator:
        dit = load_stage(dit_ckpt, DopplerDiTTask)
        record = dit.hparams.get("vae") or {}
        vae_path = Path(vae_ckpt or record.get("checkpoint", ""))
        if not vae_path.is_file():
            raise ConfigError(vae_path,
                              f"the VAE checkpoint of this DiT ({dit_ckpt}) is missing; pass --vae FILE")
        generator = cls(dit, load_stage(vae_path, DopplerVAETask))  # checks the latent shape and the users
        if record.get("digest") and file_digest(vae_path) != record["digest"]:
            raise ConfigError(vae_path, f"is not the VAE the DiT ({dit_ckpt}) was trained on: its content "
                                        f"differs from the one its latents came from "
                                        f"({record.get('checkpoint')}); decoding with it would give "
                                        "meaningless images")
        return generator

    def untrained(self, seed: int = 0) -> Generator:
        """The same generator with its DiT freshly initialised (same config and latent statistics):
        the evaluation's baseline."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dit = DopplerDiTTask(**dict(self.dit.hparams))
        dit.channel_mean.copy_(self.dit.channel_mean)
        dit.channel_std.copy_(self.dit.channel_std)
        return Generator(dit.eval(), self.vae)

    def labels(self, user_ids: list[int]) -> torch.Tensor:
        """User ids (the k of ID_k) -> label indices; unknown ids are an error."""
        unknown = [u for u in user_ids if u not in self.users]
        if unknown:
            raise ConfigError("--users", f"unknown user id(s) {unknown}; the model knows {self.users}")
        index = {u: i for i, u in enumerate(self.users)}
        return torch.tensor([index[u] for u in user_ids], dtype=torch.long)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, C, h, w) latents of users `labels` -> (N, channels, H, W) uint8 images."""
        conditional = bool(self.vae.vae.num_classes)
        out = []
        for z, y in zip(latents.split(batch_size), labels.split(batch_size)):
            x = self.vae.vae.decode(z.float(), y if conditional else None).float()
            out.append(to_pixels(from_signed(x.clamp(-1, 1))))
        if not out:
            size = self.vae.hparams["image_size"]
            return torch.zeros(0, self.vae.hparams["channels"], size, size, dtype=torch.uint8)
        return torch.cat(out)

    @torch.no_grad()
    def generate(self, user_ids: list[int], per_user: int, seed: int = 0,
                 **sampling) -> tuple[torch.Tensor, torch.Tensor]:
        """per_user images of each user: (uint8 (N, C, H, W), label indices (N,)), user-major.
        `sampling`: cfg_scale, steps, solver, shift, cfg_interval (default: the DiT's sampling config)."""
        labels = self.labels(list(user_ids)).repeat_interleave(per_user)
        generator = torch.Generator().manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dit.device.type == "cpu"):
            latents = self.dit.generate_latents(labels, generator=generator, **sampling)
        return self.decode(latents.float(), labels), labels


def write_pngs(out: str | Path, pixels: torch.Tensor, user_ids: list[int], prefix: str = "gen") -> list[Path]:
    """Images (N, C, H, W) uint8 of users `user_ids` (N,) -> out/ID_k/<prefix>_XXXX.png."""
    from PIL import Image

    out, paths, counts = Path(out), [], {}
    for image, user in zip(pixels, user_ids):
        n = counts[user] = counts.get(user, -1) + 1
        array = image.permute(1, 2, 0).numpy()
        array = array[..., 0] if array.shape[-1] == 1 else array
        path = out / f"ID_{user}" / f"{prefix}_{n:04d}.png"
        pixels_hw = np.ascontiguousarray(array)
        atomic_write(path, lambda tmp, a=pixels_hw: Image.fromarray(a).save(tmp, format="PNG"))
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium sample doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="the DiT checkpoint (stage 3)")
    parser.add_argument("--vae", type=Path, default=None,
                        help="the VAE checkpoint (default: the one the DiT names)")
    parser.add_argument("--users", type=int, nargs="+", default=None,
                        help="user ids (the k of ID_k; default: all)")
    parser.add_argument("--per-user", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance scale (default: the DiT's sampling config)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--solver", choices=("euler", "heun"), default=None)
    parser.add_argument("--shift", type=float, default=None, help="timestep shift")
    parser.add_argument("--cfg-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="times t (1 = noise) at which guidance applies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.per_user < 1:
        raise ConfigError("--per-user", f"must be at least 1, got {args.per_user}")
    generator = Generator.from_checkpoints(args.ckpt, args.vae)
    users = args.users or generator.users
    sampling = {"cfg_scale": args.cfg, "steps": args.steps, "solver": args.solver, "shift": args.shift,
                "cfg_interval": tuple(args.cfg_interval) if args.cfg_interval else None}
    pixels, labels = generator.generate(users, args.per_user, args.seed, **sampling)
    paths = write_pngs(args.out, pixels, [generator.users[i] for i in labels.tolist()])
    atomic_write_json(args.out / "sample.json", {"dit": str(args.ckpt),
                                                 "vae": str(generator.vae.checkpoint_path),
                                                 "users": users, "per_user": args.per_user, "seed": args.seed,
                                                 "sampling": {k: v for k, v in sampling.items()
                                                              if v is not None}})
    print(f"[sample] {len(paths)} spectrograms of {len(users)} user(s) -> {args.out}/ID_k/gen_XXXX.png")
    return 0
