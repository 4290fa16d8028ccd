"""The doppler recipe's two DataModules, and the specs they hand their tasks (`configure_data`).

- `DopplerImageDataModule` (stage 1, the VAE; also the evaluation's real data): the images a
  prepared split lists (`reader.RealSpectrograms`), decoded once into memory at the model's
  resolution and channels. Val chooses the VAE's best checkpoint (`val/psnr`); the test loader serves
  the TEST split, which nothing in a fit reads. Batches: `image` float32 (B, C, H, W) in [0, 1], `label` int64 (B,) the
  user's index in `users`, `user` int64 (B,) the k of ID_k, `index`. Spec: `DopplerImageSpec`.
- `DopplerLatentDataModule` (stage 3, the DiT): the latents `sensorium extract doppler` wrote, with
  their per-channel statistics (`reader.read_latents`). Batches: `mean`, `std` float32 (B, C, h, w)
  the posterior of each image, `label` (B,). Spec: `DopplerLatentSpec`. Val for validation, test
  (where extracted) for `sensorium test`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sensorium.data.datamodule import DataSpec, SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.doppler.reader import SPLITS, DictDataset, RealSpectrograms, read_latents, to_unit


def _to_float(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = dict(batch)
    batch["image"] = to_unit(batch.pop("pixels"))
    return batch


def collate_images(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    batch = torch.utils.data.default_collate(samples)
    return _to_float(batch)


@dataclass(frozen=True)
class DopplerImageSpec(DataSpec):
    """What the VAE task reads from its data."""

    users: tuple[int, ...]
    """User ids in label order."""
    image_size: int
    channels: int
    root: str


@dataclass(frozen=True)
class DopplerLatentSpec(DataSpec):
    """What the DiT task reads from its latents."""

    latent_shape: tuple[int, ...]
    """(C, h, w)."""
    users: tuple[int, ...]
    channel_mean: tuple[float, ...]
    channel_std: tuple[float, ...]
    vae: dict
    """The VAE checkpoint the latents came from (latents.json's record)."""
    root: str


class DopplerImageDataModule(SensoriumDataModule):
    def __init__(self, root: str, image_size: int = 64, channels: int = 1, batch_size: int = 32,
                 eval_batch_size: int = 128, num_workers: int = 0, seed: int = 0):
        """
        Args:
            root: a folder written by `sensorium prepare doppler` (split.csv + prepare.json).
            image_size: square model resolution every image is resized to.
            channels: 1 (grayscale) or 3 (RGB); images of other modes are converted.
            batch_size: images per training batch and rank.
        """
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError("data.channels", f"must be 1 or 3, got {channels}")
        self.root = self.where = root
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.real: RealSpectrograms | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.real is not None:
            return
        self.real = RealSpectrograms(self.root, self.image_size, self.channels)
        self.log_splits(f"[doppler] {sum(self.split_sizes().values())} spectrograms of {len(self.real.users)} users "
                        f"at {self.channels}x{self.image_size}x{self.image_size}", self.split_sizes())

    def split_sizes(self) -> dict[str, int]:
        return {split: len(v) for split, v in self.real.labels.items()} if self.real else {}

    def data_spec(self) -> DopplerImageSpec:
        return DopplerImageSpec(users=tuple(self.real.users), image_size=self.image_size, channels=self.channels,
                                root=str(self.root))

    def split_fingerprints(self) -> dict[str, dict[str, str]]:
        """{split: {path: content hash}} for the doctor's overlap check."""
        if self.real is None:
            return {}
        return {split: {str(p): sample_fingerprint([p]) for p in paths}
                for split, paths in self.real.paths.items()}

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.real.dataset("train"), collate_images)

    def val_dataloader(self) -> DataLoader:
        self.real.require("val")
        return self.eval_loader(self.real.dataset("val"), "val", collate_images)

    def test_dataloader(self) -> DataLoader:
        self.real.require("test")
        return self.eval_loader(self.real.dataset("test"), "test", collate_images)


class DopplerLatentDataModule(SensoriumDataModule):
    def __init__(self, root: str, batch_size: int = 64, eval_batch_size: int = 256, num_workers: int = 0,
                 seed: int = 0):
        """root: a folder written by `sensorium extract doppler` (latents.safetensors + latents.json)."""
        super().__init__()
        self.root = self.where = root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.meta: dict | None = None
        self.tensors: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.meta is not None:
            return
        self.meta, self.tensors = read_latents(self.root)
        self.log_splits(f"[doppler] latents {tuple(self.meta['latent_shape'])} of {len(self.meta['users'])} users",
                        self.split_sizes())

    def split_sizes(self) -> dict[str, int]:
        return {split: len(self.tensors[f"{split}_label"]) for split in SPLITS
                if f"{split}_label" in self.tensors} if self.meta else {}

    def data_spec(self) -> DopplerLatentSpec:
        """The latents' shape, users, per-channel statistics and the VAE they came from."""
        return DopplerLatentSpec(latent_shape=tuple(self.meta["latent_shape"]), users=tuple(self.meta["users"]),
                                 channel_mean=tuple(self.tensors["channel_mean"].tolist()),
                                 channel_std=tuple(self.tensors["channel_std"].tolist()), vae=self.meta["vae"],
                                 root=str(self.root))

    def _dataset(self, split: str) -> DictDataset:
        t = self.tensors
        return DictDataset({"mean": t[f"{split}_mean"], "std": t[f"{split}_std"],
                            "label": t[f"{split}_label"].long()})

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self._dataset("train"), torch.utils.data.default_collate)

    def val_dataloader(self) -> DataLoader:
        if not len(self.tensors["val_label"]):
            raise DataError(Path(self.root) / "latents.safetensors", "no val latents")
        return self.eval_loader(self._dataset("val"), "val", torch.utils.data.default_collate)

    def test_dataloader(self) -> DataLoader:
        if not len(self.tensors.get("test_label", ())):
            raise DataError(Path(self.root) / "latents.safetensors",
                            "no test latents (prepare with --test-ratio > 0, then extract again)")
        return self.eval_loader(self._dataset("test"), "test", torch.utils.data.default_collate)
