"""Helpers of test_feature_cache.py: a toy encoder and toy samples on disk, and (run as a script under
torchrun) one rank of a feature-cache build shared by several gloo ranks:

    python -m torch.distributed.run --nproc-per-node 2 --standalone feature_cache_ranks.py ROOT

Each rank writes ROOT/rank<r>.json: how many samples it loaded, the store it opened, one row of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sensorium.data.feature_cache import FeatureRequest, ensure_feature_stores, file_stamp
from sensorium.errors import DataError


class Encoder(nn.Module):
    """(n, 3, 4) -> (n, 3, 2) tokens."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Samples:
    """Sample i is the array in file i (3 x 4 floats, written once); calling it loads one sample and
    counts the loads; rows in `bad` fail to load."""

    def __init__(self, folder: Path, n: int = 7):
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"s{i}.npy" for i in range(n)]
        for i, path in enumerate(self.paths):
            if not path.exists():
                np.save(path, np.random.default_rng(i).normal(size=(3, 4)).astype(np.float32))
        self.loads = 0
        self.bad: set[int] = set()

    @property
    def keys(self) -> list[str]:
        return [p.stem for p in self.paths]

    def files(self) -> list:
        return [[file_stamp(p)] for p in self.paths]

    def __call__(self, row: int, names):
        self.loads += 1
        if row in self.bad:
            raise DataError(self.paths[row], "cannot decode")
        return {name: torch.from_numpy(np.load(self.paths[row])) for name in names}


def request(samples: Samples, encoder: nn.Module, size: int = 4, name: str = "video") -> FeatureRequest:
    return FeatureRequest(name, encoder, {"size": size}, samples.files(), torch.zeros(1, 3, 4))


def ensure(root, samples: Samples, *requests: FeatureRequest, **kwargs):
    return ensure_feature_stores(root, "dataset", samples.keys, list(requests), samples, batch_size=3, **kwargs)


class Gloo:
    """What ensure_feature_stores needs of a Lightning strategy, on a plain process group."""

    def __init__(self):
        import torch.distributed as dist

        self.global_rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def broadcast(self, obj, src: int = 0):
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self, name=None):
        import torch.distributed as dist

        dist.barrier()


def main(root: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        samples = Samples(root / "data")
        strategy = Gloo()
        store = ensure(root / "cache", samples, request(samples, Encoder()), strategy=strategy, dtype="float32")["video"]
        result = {"loads": samples.loads, "path": str(store.path), "row": store.read(6).tolist()}
        (root / f"rank{strategy.global_rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
