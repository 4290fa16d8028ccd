"""The cardiac recipe's augmentation: one random rotation and scale of a whole training sample.

Distances are invariant under rotation and scale with the points, so the SDF labels stay exact:
the points turn and scale, the SDF values scale by the same factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def random_rotation(max_deg: float) -> torch.Tensor:
    """(3, 3) rotation about a uniformly random axis by an angle uniform in [-max_deg, max_deg]
    (torch's RNG, so DataLoader workers draw differently)."""
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    axis = torch.randn(3, dtype=torch.float64)
    angle = torch.deg2rad((torch.rand((), dtype=torch.float64) * 2 - 1) * max_deg)
    return axis_angle_to_rotation_matrix((axis / axis.norm() * angle)[None])[0]


@dataclass(frozen=True)
class RandomRotateScale:
    """One rigid rotation (up to `rotate_deg` about a random axis through the origin) and one scale
    factor in 1 -+ `scale` for every point of a training sample, so encoder input and queries agree.

    Called on a sample of `sensorium.recipes.cardiac.reader.CardiacCases`: points (N, 3) as row
    vectors under `*_points`, SDF values (N, C) under `vol_sdf` / `near_sdf`; labels unchanged.
    """

    rotate_deg: float
    scale: float

    def __call__(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rotation = random_rotation(self.rotate_deg).float()
        factor = 1.0 + (float(torch.rand(())) * 2 - 1) * self.scale
        for name in ("surface_points", "vol_points", "near_points"):
            sample[name] = sample[name] @ rotation.T * factor  # (N, 3) row vectors
        for name in ("vol_sdf", "near_sdf"):
            sample[name] = sample[name] * factor
        return sample
