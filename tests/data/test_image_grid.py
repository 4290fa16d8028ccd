"""uv of the original image -> an encoder's patch grid under resize and crop (`GridTransform`)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sensorium.data.image_grid import GridTransform
from sensorium.errors import ConfigError


def test_resize_then_crop_maps_a_pixel_as_computed_by_hand():
    # 100 x 200 image -> resized to 50 x 100 -> crop top 5, left 10, 32 x 64 -> 8-pixel cells (4 x 8 grid)
    t = GridTransform((100, 200), (50, 100), (5, 10, 32, 64), 8)
    assert t.grid == (4, 8) and t.cell_pixels == (16.0, 16.0)
    # u = 39.5 -> resized (39.5 + 0.5) * 0.5 - 0.5 = 19.5 -> minus left 9.5 -> (9.5 + 0.5) / 8 - 0.5 = 0.75
    # v = 19.5 -> resized 9.5 -> minus top 4.5 -> (4.5 + 0.5) / 8 - 0.5 = 0.125
    np.testing.assert_allclose(t.to_grid(np.array([39.5, 19.5])), [0.75, 0.125])
    # the centre of cell (row 0, col 0) in the original image: resized (3.5 + 10, 3.5 + 5) -> (27.5, 17.5)
    np.testing.assert_allclose(t.to_image(np.array([0.0, 0.0])), [27.5, 17.5])
    uv = np.random.default_rng(0).uniform([-0.5, -0.5], [199.5, 99.5], size=(100, 2))
    np.testing.assert_allclose(t.to_image(t.to_grid(uv)), uv, atol=1e-9)
    # inside the crop: resized u in [10 - 0.5, 74 - 0.5] -> original u in [19.5, 147.5 - ...]
    assert t.inside(np.array([[40.0, 40.0], [5.0, 40.0], [40.0, 95.0]])).tolist() == [True, False, False]


@pytest.mark.parametrize("transform", [
    GridTransform((48, 64), (48, 64), (0, 0, 48, 64), 8),
    GridTransform((48, 64), (64, 80), (0, 0, 64, 80), 16),
    GridTransform.resize_center_crop((60, 90), (64, 96), (64, 64), 16),
], ids=["identity", "resize", "resize+centre crop"])
def test_the_mapping_matches_real_resize_crop_and_patching(transform):
    """A ramp image (pixel value = its u, or its v) through F.interpolate (align_corners=False), the
    crop and average pooling over each cell: every cell holds the original u / v of its centre, which
    is what `to_image` says (bilinear interpolation reproduces a linear ramp exactly)."""
    H, W = transform.image_size
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    image = torch.stack([u, v])[None]  # (1, 2, H, W)
    resized = F.interpolate(image, size=transform.resize, mode="bilinear", align_corners=False)
    top, left, h, w = transform.crop
    cells = F.avg_pool2d(resized[:, :, top:top + h, left:left + w], transform.stride)[0]  # (2, Hf, Wf)
    Hf, Wf = transform.grid
    gy, gx = np.meshgrid(np.arange(Hf), np.arange(Wf), indexing="ij")
    expected = transform.to_image(np.stack([gx, gy], -1).astype(float))  # (Hf, Wf, 2)
    interior = np.s_[1:-1, 1:-1]  # the outermost pixels clamp at the border in a resize
    np.testing.assert_allclose(cells[0].numpy()[interior], expected[..., 0][interior], atol=1e-6)
    np.testing.assert_allclose(cells[1].numpy()[interior], expected[..., 1][interior], atol=1e-6)


def test_impossible_transforms_are_rejected():
    with pytest.raises(ConfigError, match="does not fit"):
        GridTransform((10, 10), (10, 10), (4, 0, 8, 8), 4)
    with pytest.raises(ConfigError, match="whole number"):
        GridTransform((10, 10), (10, 10), (0, 0, 10, 10), 4)
    t = GridTransform.resize_center_crop((480, 640), (256, 341), (224, 224), 14)
    assert t.crop == (16, 58, 224, 224) and t.grid == (16, 16)
    assert GridTransform.from_dict(t.to_dict()) == t
