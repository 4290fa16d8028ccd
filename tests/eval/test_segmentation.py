"""Segmentation metrics against hand-computed cases: Dice of known boxes, HD95 / ASSD of offset plates
(exact) and offset spheres (analytic) at anisotropic spacing, overlap and gap of known boxes in mL,
the cropped surface distances against a brute-force search over the whole grid, and coarse-to-fine
implicit masks against querying every voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from sensorium.eval.segmentation import (
    dice,
    hausdorff_assd,
    implicit_masks,
    label_masks,
    segmentation_metrics,
    surface,
    surface_distances,
)


def _box(shape, x, y, z) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[x[0]:x[1], y[0]:y[1], z[0]:z[1]] = True
    return mask


def test_dice_of_known_boxes():
    shape = (8, 8, 8)
    a = _box(shape, (0, 4), (0, 4), (0, 4))  # 64 voxels
    b = _box(shape, (2, 6), (0, 4), (0, 4))  # 64 voxels, 32 shared
    empty = np.zeros(shape, dtype=bool)
    result = dice(np.stack([a, a, empty, empty]), np.stack([b, a, a, empty]))
    np.testing.assert_allclose(result[:3], [2 * 32 / 128, 1.0, 0.0])
    assert np.isnan(result[3])  # both empty: undefined


def test_surface_of_a_box_is_its_shell():
    box = _box((7, 7, 7), (1, 6), (1, 6), (1, 6))  # 5^3
    shell = surface(box)
    assert shell.sum() == 5**3 - 3**3 and not shell[3, 3, 3] and shell[1, 3, 3]
    plate = _box((5, 5, 5), (0, 5), (0, 5), (2, 3))  # one voxel thick: all surface, array edges too
    assert (surface(plate) == plate).all()


SPACING = (0.7, 0.9, 2.5)


def test_hd95_and_assd_of_offset_plates_by_hand():
    """One-voxel plates three voxels apart along z (2.5 mm voxels), the second shifted one voxel
    along x (0.7 mm): every voxel's nearest is straight across (7.5 mm) but one column each way,
    whose nearest is diagonal (sqrt(0.7^2 + 7.5^2))."""
    shape = (12, 8, 8)
    a = _box(shape, (2, 8), (2, 6), (2, 3))  # 6 x 4 voxels
    b = _box(shape, (3, 9), (2, 6), (5, 6))
    straight, diagonal = 3 * 2.5, np.hypot(0.7, 3 * 2.5)
    forward, backward = surface_distances(a, b, SPACING)
    np.testing.assert_allclose(np.sort(forward), [straight] * 20 + [diagonal] * 4)
    np.testing.assert_allclose(np.sort(backward), [straight] * 20 + [diagonal] * 4)
    hd95, assd = hausdorff_assd(a, b, SPACING)
    # 95th percentile of 24 sorted values: between the 22nd and 23rd (0-based 21.85), both diagonal.
    assert hd95 == pytest.approx(diagonal)
    assert assd == pytest.approx((40 * straight + 8 * diagonal) / 48)
    # The same plates at the wrong spacing (axes swapped) measure something else: spacing matters.
    assert hausdorff_assd(a, b, SPACING[::-1])[0] != pytest.approx(diagonal, abs=0.5)


def test_hd95_and_assd_of_offset_spheres_match_the_continuous_values():
    """Two spheres of radius r, centres t apart along x, on a grid of 0.5 x 0.75 x 1 mm voxels.
    A point of one sphere at cos(angle to the shift) = s lies |sqrt(r^2 + t^2 - 2rts) - r| from the
    other, and s is uniform over the sphere's area (Archimedes): both directions share that
    distribution. The voxel surfaces sample it within about half a voxel."""
    r, t, spacing = 9.0, 3.0, np.array([0.5, 0.75, 1.0])
    shape = np.ceil(np.array([30.0, 24.0, 24.0]) / spacing).astype(int)
    axes = [np.arange(n) * h - 12.0 for n, h in zip(shape, spacing)]  # mm, the first centre at the origin
    x, y, z = np.meshgrid(*axes, indexing="ij")
    a = x**2 + y**2 + z**2 <= r**2
    b = (x - t) ** 2 + y**2 + z**2 <= r**2
    s = np.linspace(-1.0, 1.0, 2_000_001)
    d = np.abs(np.sqrt(r**2 + t**2 - 2 * r * t * s) - r)
    hd95, assd = hausdorff_assd(a, b, spacing)
    assert hd95 == pytest.approx(np.percentile(d, 95), abs=0.5)
    assert assd == pytest.approx(d.mean(), abs=0.5)
    # In voxels (spacing ignored) the shift alone is 6 voxels along x: far from the mm answer.
    assert abs(hausdorff_assd(a, b, (1.0, 1.0, 1.0))[0] - np.percentile(d, 95)) > 1.0


def test_cropped_surface_distances_equal_a_brute_force_search():
    rng = np.random.default_rng(0)
    spacing = np.array([0.8, 1.3, 2.1])
    for _ in range(5):
        shape = (14, 12, 10)
        a = rng.random(shape) < 0.04
        b = rng.random(shape) < 0.04
        a[3:7, 2:6, 1:4] = True  # a solid part, so surfaces are not all of the mask
        forward, backward = surface_distances(a, b, spacing)
        pa, pb = np.argwhere(surface(a)) * spacing, np.argwhere(surface(b)) * spacing  # mm
        pairwise = cdist(pa, pb)
        # argwhere (C order) lists surface voxels in the order boolean indexing reads them.
        np.testing.assert_allclose(forward, pairwise.min(axis=1))
        np.testing.assert_allclose(backward, pairwise.min(axis=0))


def test_empty_masks_have_no_surface_distance():
    empty, box = np.zeros((6, 6, 6), dtype=bool), _box((6, 6, 6), (1, 4), (1, 4), (1, 4))
    assert surface_distances(empty, box, (1, 1, 1)) is None
    assert all(np.isnan(hausdorff_assd(box, empty, (1, 1, 1))))


def test_volumes_overlap_and_gap_of_known_boxes_in_ml():
    """Two predicted structures sharing a 2 x 4 x 4 slab, against two disjoint true ones whose
    union reaches three slabs further than the prediction; voxels of 0.5 x 0.5 x 2 mm = 0.5 mm^3."""
    shape = (10, 4, 4)
    pred = np.stack([_box(shape, (0, 4), (0, 4), (0, 4)), _box(shape, (2, 6), (0, 4), (0, 4))])
    truth = np.stack([_box(shape, (0, 3), (0, 4), (0, 4)), _box(shape, (3, 9), (0, 4), (0, 4))])
    out = segmentation_metrics(pred, truth, (0.5, 0.5, 2.0))
    ml = 0.5e-3  # mL per voxel
    assert out["overlap_ml"] == pytest.approx(2 * 16 * ml)  # x in [2, 6) claimed twice
    assert out["gap_ml"] == pytest.approx(3 * 16 * ml)  # x in [6, 9): true, predicted by neither
    np.testing.assert_allclose(out["pred_ml"], [64 * ml, 64 * ml])
    np.testing.assert_allclose(out["true_ml"], [48 * ml, 96 * ml])
    np.testing.assert_allclose(out["volume_error_ml"], [16 * ml, -32 * ml])
    np.testing.assert_allclose(out["dice"], [2 * 48 / 112, 2 * 48 / 160])
    assert out["hd95_mm"].shape == out["assd_mm"].shape == (2,)
    # A sheared grid passes its own voxel volume (|det| of the affine), which every volume follows.
    sheared = segmentation_metrics(pred, truth, (0.5, 0.5, 2.0), voxel_volume=0.25)
    assert sheared["overlap_ml"] == pytest.approx(out["overlap_ml"] / 2)
    assert sheared["dice"] == pytest.approx(out["dice"])
    # Disjoint predictions that cover the truth leave neither overlap nor gap.
    exact = segmentation_metrics(truth, truth, (0.5, 0.5, 2.0))
    assert exact["overlap_ml"] == exact["gap_ml"] == 0.0
    np.testing.assert_allclose(exact["dice"], 1.0)
    np.testing.assert_allclose(exact["hd95_mm"], 0.0)


def test_label_masks():
    labels = np.array([[[0, 1, 2, 2]]], dtype=np.uint8)
    masks = label_masks(labels, 3)
    assert masks.shape == (3, 1, 1, 4)
    assert masks.sum(axis=(1, 2, 3)).tolist() == [1, 2, 0]


def test_coarse_to_fine_masks_equal_querying_every_voxel():
    """Three structures of an implicit function (a sphere, an ellipsoid overlapping it, a slab two
    voxels thick) on a 31 x 26 x 17 grid: the coarse-to-fine masks are the full query's, from far
    fewer queries."""
    shape = (31, 26, 17)

    def inside(index: np.ndarray) -> np.ndarray:  # (Q, 3) -> (Q, 3) bool
        calls.append(len(index))
        x, y, z = index.T.astype(np.float64)
        sphere = (x - 12) ** 2 + (y - 12) ** 2 + (z - 8) ** 2 <= 7.5**2
        ellipsoid = ((x - 20) / 9.0) ** 2 + ((y - 14) / 5.0) ** 2 + ((z - 9) / 6.0) ** 2 <= 1.0
        slab = (z >= 3) & (z <= 4) & (x >= 2) & (x <= 27)
        return np.stack([sphere, ellipsoid, slab], axis=1)

    calls: list[int] = []
    full = implicit_masks(inside, shape, stride=1, chunk=1000)
    assert sum(calls) == np.prod(shape) and max(calls) <= 1000 and full.shape == (3, *shape)
    calls.clear()
    coarse = implicit_masks(inside, shape, stride=2, chunk=1000)
    np.testing.assert_array_equal(coarse, full)
    assert sum(calls) < 0.6 * np.prod(shape)
    # A piece between lattice points (one voxel at odd indices) is what the coarse pass can miss.
    dot = implicit_masks(lambda i: np.all(i == (5, 5, 5), axis=1)[:, None], shape, stride=2)
    assert dot.sum() == 0 and implicit_masks(lambda i: np.all(i == (5, 5, 5), axis=1)[:, None], shape, 1).sum() == 1
