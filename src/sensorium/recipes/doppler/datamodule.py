"""The doppler recipe's two DataModules.

- `DopplerImageDataModule` (stage 1, the VAE; also the evaluation's real data): the images a
  prepared split lists, decoded once into memory at the model's resolution and channels. Batches:
  `image` float32 (B, C, H, W) in [0, 1], `label` int64 (B,) the user's index in `users`, `user`
  int64 (B,) the k of ID_k, `index`.
- `DopplerLatentDataModule` (stage 3, the DiT): the latents `sensorium extract doppler` wrote, with
  their per-channel statistics. Batches: `mean`, `std` float32 (B, C, h, w) the posterior of each
  image, `label` (B,).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from sensorium.data.datamodule import DataSpec, SensoriumDataModule
from sensorium.data.fingerprint import sample_fingerprint
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.doppler.reader import load_images, read_split_csv


def read_prepared(root: str | Path) -> dict:
    """prepare.json of a prepared folder (with its split.csv)."""
    path = Path(root) / "prepare.json"
    if not path.is_file():
        raise DataError(path, "missing: data.root must be the output of `sensorium prepare doppler "
                              "--input DIR --out THIS_DIR`")
    return json.loads(path.read_text())


class DictDataset(Dataset):
    """Rows of equally long tensors as dicts."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class RealSpectrograms:
    """A prepared dataset's images, decoded: `pixels[split]` uint8 (N, C, H, W), `labels[split]`
    (N,) user indices into `users`, `paths[split]`. Used by the DataModule and by the evaluation."""

    def __init__(self, root: str | Path, image_size: int = 64, channels: int = 1):
        self.root = Path(root)
        self.info = read_prepared(root)
        self.input = Path(self.info["input"])
        self.users: list[int] = list(self.info["users"])
        self.image_size, self.channels = image_size, channels
        index = {u: i for i, u in enumerate(self.users)}
        rows = read_split_csv(self.root / "split.csv")
        self.paths: dict[str, list[Path]] = {"train": [], "val": []}
        labels: dict[str, list[int]] = {"train": [], "val": []}
        for path, user, _, split in rows:
            if user not in index:
                raise DataError(self.root / "split.csv",
                                f"user {user} is not in prepare.json's users {self.users}")
            self.paths[split].append(self.input / path)
            labels[split].append(index[user])
        missing = next((p for paths in self.paths.values() for p in paths if not p.is_file()), None)
        if missing is not None:
            raise DataError(missing,
                            f"listed in {self.root / 'split.csv'} but missing (moved dataset? prepare again)")
        size = (image_size, image_size)
        self.pixels = {split: load_images(paths, size, channels) for split, paths in self.paths.items()}
        self.labels = {split: torch.tensor(v, dtype=torch.long) for split, v in labels.items()}

    def dataset(self, split: str) -> DictDataset:
        user_ids = torch.tensor(self.users, dtype=torch.long)
        labels = self.labels[split]
        return DictDataset({"pixels": self.pixels[split], "label": labels, "user": user_ids[labels],
                            "index": torch.arange(len(labels))})


def _to_float(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = dict(batch)
    batch["image"] = batch.pop("pixels").float() / 255.0
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
        if not len(self.real.labels["val"]):
            raise DataError(Path(self.root) / "split.csv", "no val images (prepare with --val-ratio > 0)")
        return self.eval_loader(self.real.dataset("val"), "val", collate_images)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


# --- latents ------------------------------------------------------------------------------------------
def read_latents(root: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(latents.json, tensors of latents.safetensors) of an extracted folder."""
    from safetensors.torch import load_file

    root = Path(root)
    meta_path, tensor_path = root / "latents.json", root / "latents.safetensors"
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise DataError(path, "missing: data.root must be the output of `sensorium extract doppler`")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path))
    needed = {f"{split}_{key}" for split in ("train", "val") for key in ("mean", "std", "label")} | {
        "channel_mean", "channel_std"}
    if not needed <= set(tensors):
        raise DataError(tensor_path, f"lacks {sorted(needed - set(tensors))}")
    shape = tuple(meta["latent_shape"])
    if tuple(tensors["train_mean"].shape[1:]) != shape:
        raise DataError(tensor_path,
                        f"latents are {tuple(tensors['train_mean'].shape[1:])}, latents.json says {shape}")
    return meta, tensors


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
        return {split: len(self.tensors[f"{split}_label"]) for split in ("train", "val")} if self.meta else {}

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
