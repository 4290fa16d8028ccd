"""Images <-> patch sequences: `patchify` / `unpatchify` (the MAE target space) and `PatchEmbed`, the
strided-conv patch projection of a ViT.

Patch order is row-major over the patch grid, and each patch is flattened as (p, p, C), the order of
MAE's `patchify`, so a decoder head trained under MAE's convention reads the same layout.
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., L, p*p*C) with L = (H/p) * (W/p); any leading dims are kept."""
    *lead, C, H, W = imgs.shape
    if H % patch or W % patch:
        raise ValueError(f"image {H}x{W} is not divisible into {patch}x{patch} patches")
    h, w = H // patch, W // patch
    x = imgs.reshape(-1, C, h, patch, w, patch)  # (N, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (N, h, w, p, p, C)
    return x.reshape(*lead, h * w, patch * patch * C)  # (..., L, p*p*C)


def unpatchify(x: torch.Tensor, patch: int, grid: tuple[int, int] | None = None,
               channels: int = 3) -> torch.Tensor:
    """(..., L, p*p*C) -> (..., C, H, W), the inverse of `patchify`. `grid` is (h, w) in patches;
    None means a square grid."""
    *lead, L, P = x.shape
    if P != patch * patch * channels:
        raise ValueError(f"patch vectors of size {P} do not hold {patch}x{patch}x{channels} pixels")
    if grid is None:
        side = round(L**0.5)
        grid = (side, side)
    h, w = grid
    if h * w != L:
        raise ValueError(f"{L} patches do not fill a {h}x{w} grid")
    x = x.reshape(-1, h, w, patch, patch, channels)  # (N, h, w, p, p, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p, w, p)
    return x.reshape(*lead, channels, h * patch, w * patch)  # (..., C, H, W)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, L, dim): one strided convolution, one token per non-overlapping patch."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int = 3, dim: int = 768):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As in MAE: the conv is a linear map of each flattened patch, so initialise it like a Linear
        # (xavier_uniform over (dim, C*p*p)) rather than with the Conv2d default.
        nn.init.xavier_uniform_(self.proj.weight.view(self.proj.weight.shape[0], -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        H, W = imgs.shape[-2:]
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError(f"PatchEmbed expects {self.img_size}x{self.img_size} images, got {H}x{W}")
        x = self.proj(imgs)  # (B, dim, h, w)
        return x.flatten(2).transpose(1, 2)  # (B, L, dim)
