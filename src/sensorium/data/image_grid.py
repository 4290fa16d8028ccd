"""Where a pixel of the original image lands on an image encoder's patch grid.

An encoder sees the image after its preprocessing: a resize of the whole (H, W) image to
(H', W') (aspect ratio not necessarily kept), then a crop (top, left, h, w) of the resized image,
then patches (or a conv net's output cells) of `stride` x `stride` pixels, giving a (h / stride,
w / stride) grid. `GridTransform` holds exactly that, stored in a feature pack's `meta`, so any uv of
the original image maps onto the grid without guessing.

Pixel convention (OpenCV's): the centre of the top-left pixel is (u, v) = (0, 0) with u the column
and v the row; the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. A resize maps pixel edges onto
pixel edges (`F.interpolate(..., align_corners=False)`, PIL and most processors):
u' = (u + 0.5) * W' / W - 0.5. Grid coordinates put cell centres at integers (the convention of
`sensorium.layers.sampling.sample_points`): g = (u' - left + 0.5) / stride - 0.5.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from sensorium.errors import ConfigError


@dataclass(frozen=True)
class GridTransform:
    image_size: tuple[int, int]
    """(H, W) of the original frames, the space of the uv coordinates."""
    resize: tuple[int, int]
    """(H', W') the whole image is resized to first (equal to image_size: no resize)."""
    crop: tuple[int, int, int, int]
    """(top, left, h, w) of the region of the resized image the encoder sees."""
    stride: int
    """Pixels of the cropped image per grid cell (a ViT's patch size, a conv net's total stride)."""

    def __post_init__(self) -> None:
        top, left, h, w = self.crop
        if min(*self.image_size, *self.resize, h, w, self.stride) <= 0 or top < 0 or left < 0:
            raise ConfigError("transform", f"sizes must be positive and offsets non-negative: {self.to_dict()}")
        if top + h > self.resize[0] or left + w > self.resize[1]:
            raise ConfigError("transform", f"crop {self.crop} does not fit the resized image {self.resize}")
        if h % self.stride or w % self.stride:
            raise ConfigError("transform", f"crop {h}x{w} is not a whole number of {self.stride}-pixel cells")

    @classmethod
    def identity(cls, image_size: tuple[int, int], stride: int) -> GridTransform:
        return cls(tuple(image_size), tuple(image_size), (0, 0, *image_size), stride)

    @classmethod
    def resize_center_crop(cls, image_size: tuple[int, int], resize: tuple[int, int], crop: tuple[int, int],
                           stride: int) -> GridTransform:
        """Resize to `resize`, then a centred `crop` (h, w) (torchvision's and HF processors' rounding)."""
        top, left = int(round((resize[0] - crop[0]) / 2.0)), int(round((resize[1] - crop[1]) / 2.0))
        return cls(tuple(image_size), tuple(resize), (top, left, *crop), stride)

    @classmethod
    def from_dict(cls, value: dict) -> GridTransform:
        return cls(tuple(value["image_size"]), tuple(value["resize"]), tuple(value["crop"]), int(value["stride"]))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def grid(self) -> tuple[int, int]:
        """(Hf, Wf) cells."""
        return self.crop[2] // self.stride, self.crop[3] // self.stride

    @property
    def cell_pixels(self) -> tuple[float, float]:
        """(height, width) of one grid cell in original-image pixels."""
        return (self.stride * self.image_size[0] / self.resize[0], self.stride * self.image_size[1] / self.resize[1])

    def to_grid(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) original-image (u, v) -> (..., 2) grid (x, y), cell centres at integers."""
        gain, shift = self._grid_affine
        return np.asarray(uv, dtype=np.float64) * gain + shift

    @functools.cached_property
    def _grid_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """to_grid as g = uv * gain + shift (one pass: it runs on every point of every training sample):
        resized u' = (u + 0.5) * scale - 0.5, then g = (u' - offset + 0.5) / stride - 0.5."""
        scale = np.array([self.resize[1] / self.image_size[1], self.resize[0] / self.image_size[0]])
        offset = np.array([self.crop[1], self.crop[0]], dtype=np.float64)
        return scale / self.stride, (0.5 * scale - offset) / self.stride - 0.5

    def to_image(self, grid: np.ndarray) -> np.ndarray:
        """The inverse of `to_grid`: (..., 2) grid (x, y) -> original-image (u, v)."""
        grid = np.asarray(grid, dtype=np.float64)
        scale = np.array([self.resize[1] / self.image_size[1], self.resize[0] / self.image_size[0]])
        offset = np.array([self.crop[1], self.crop[0]], dtype=np.float64)
        resized = (grid + 0.5) * self.stride - 0.5 + offset
        return (resized + 0.5) / scale - 0.5

    def inside(self, uv: np.ndarray) -> np.ndarray:
        """(...,) bool: the pixel lies inside the crop (the encoder saw it)."""
        return self.on_grid(self.to_grid(uv))

    def on_grid(self, g: np.ndarray) -> np.ndarray:
        """(...,) bool: grid positions (from `to_grid`) that fall on the grid's cells."""
        Hf, Wf = self.grid
        return (g[..., 0] >= -0.5) & (g[..., 0] <= Wf - 0.5) & (g[..., 1] >= -0.5) & (g[..., 1] <= Hf - 0.5)
