"""Reading a feature map at continuous positions: bilinear sampling of (B, C, H, W) maps at K points
per map, the pixel-to-feature lookup of point-to-patch alignment (SLidR, the rgbpc recipe).

Positions are in the map's own cell units with cell centres at integers: cell (row i, column j)
spans [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5), so (x, y) = (j, i) reads cell (i, j) exactly and
(j + 0.5, i) is the mean of cells (i, j) and (i, j + 1). Positions outside the map read the border
cells (they are clamped, never zero-padded: a point at the image edge keeps a real feature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_points(feature_map: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `feature_map` (B, C, H, W) at `points` (B, K, 2) given as (x, y) = (column,
    row) in cell units -> (B, K, C), in the map's dtype.

    >>> m = torch.arange(6.0).view(1, 1, 2, 3)          # [[0, 1, 2], [3, 4, 5]]
    >>> sample_points(m, torch.tensor([[[0.5, 0.5]]]))  # mean of 0, 1, 3, 4
    tensor([[[2.]]])
    """
    if feature_map.ndim != 4 or points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected a (B, C, H, W) map and (B, K, 2) points, got {tuple(feature_map.shape)} "
                         f"and {tuple(points.shape)}")
    if points.shape[0] != feature_map.shape[0]:
        raise ValueError(f"{points.shape[0]} point sets for {feature_map.shape[0]} maps")
    H, W = feature_map.shape[-2:]
    size = torch.tensor([W, H], dtype=points.dtype, device=points.device)
    # grid_sample's normalised coordinates with align_corners=False: -1 and 1 are the outer edges of
    # the border cells, so the centre of cell j sits at (j + 0.5) / W * 2 - 1.
    grid = (points + 0.5) / size * 2 - 1  # (B, K, 2)
    sampled = F.grid_sample(feature_map, grid[:, :, None, :].to(feature_map.dtype), mode="bilinear",
                            padding_mode="border", align_corners=False)  # (B, C, K, 1)
    return sampled[..., 0].transpose(1, 2)  # (B, K, C)
