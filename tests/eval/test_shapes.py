"""Shape metrics: per-structure IoU on known shapes, grid decoding and meshes, Chamfer / F-score,
PLY round trip, the comparison rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sensorium.data.sdf import sample_surface
from sensorium.eval.shapes import (
    chamfer_distance,
    class_iou,
    decode_grid,
    export_meshes,
    f_score,
    grid_meshes,
    mean_iou,
    mesh_metrics,
    read_ply,
    render_comparison,
)


def _cell_centres(n=40):
    axis = (torch.arange(n) + 0.5) / n * 2 - 1  # centres of n cells over [-1, 1]
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def _cube_sdf(points, lo, hi):
    lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
    q = (points - (lo + hi) / 2).abs() - (hi - lo) / 2
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def test_iou_identical_shifted_and_absent():
    points = _cell_centres()
    cube = _cube_sdf(points, [-0.5] * 3, [0.0] * 3)
    shifted = _cube_sdf(points, [-0.25, -0.5, -0.5], [0.25, 0.0, 0.0])  # half a side along x
    outside = torch.ones(len(points))  # a structure absent from both
    pred = torch.stack([cube, shifted, outside], -1)
    target = torch.stack([cube, cube, outside], -1)
    iou = class_iou(pred, target)
    assert iou[0] == 1.0
    torch.testing.assert_close(iou[1], torch.tensor(1 / 3))  # overlap 1/2 side: 0.5 / 1.5
    assert math.isnan(iou[2])
    assert mean_iou(iou) == pytest.approx((1 + 1 / 3) / 2)


def test_iou_batched_and_numpy_inputs():
    points = _cell_centres(20)
    sdf = torch.stack([_cube_sdf(points, [-0.5] * 3, [0.5] * 3)] * 2, -1)
    iou = class_iou(np.stack([sdf.numpy()] * 3), np.stack([sdf.numpy()] * 3))
    assert iou.shape == (3, 2) and torch.all(iou == 1)


def test_decode_grid_in_chunks_and_meshes_of_a_sphere():
    calls = []

    def decode(q):  # (1, Q, 3) -> (1, Q, 2): a sphere and an empty channel
        calls.append(q.shape[1])
        return torch.stack([q.norm(dim=-1) - 0.6, torch.ones(q.shape[:2])], -1)

    grid = decode_grid(decode, resolution=33, chunk=5000)
    assert grid.shape == (33, 33, 33, 2) and max(calls) == 5000 and sum(calls) == 33**3
    sphere, empty = grid_meshes(grid)
    assert empty is None
    radii = np.linalg.norm(sphere.vertices, axis=1)
    assert np.abs(radii - 0.6).max() < 2 / 32 * 0.5  # within half a grid step
    assert sphere.enclosed_volume() == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.03)


def test_chamfer_and_fscore_known_values():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(500, 3)) * np.array([1, 1, 0])  # a plane of points
    assert chamfer_distance(points, points) == 0 and f_score(points, points, 0.01) == 1.0
    lifted = points + np.array([0, 0, 0.05])  # every nearest neighbour is the lifted copy
    assert chamfer_distance(points, lifted) == pytest.approx(0.05)
    assert chamfer_distance(points, lifted) == chamfer_distance(lifted, points)
    assert f_score(points, lifted, 0.04) == 0.0 and f_score(points, lifted, 0.06) == 1.0


def test_mesh_metrics_per_structure(tmp_path):
    grid = decode_grid(lambda q: (q.norm(dim=-1) - 0.5)[..., None], resolution=41)
    meshes = grid_meshes(grid) + [None]
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(40000, 3))  # dense enough that sampling gaps stay well under the threshold
    gt = 0.5 * gt / np.linalg.norm(gt, axis=1, keepdims=True)
    labels = np.zeros(40000, dtype=np.int64)
    labels[30000:] = 1
    result = mesh_metrics(meshes, gt, labels, ["sphere", "missing"], threshold=0.02, num_samples=30000)
    assert result["sphere"]["chamfer"] < 0.01 and result["sphere"]["fscore"] > 0.95
    assert math.isnan(result["missing"]["chamfer"]) and result["missing"]["fscore"] == 0.0


def test_ply_round_trip_and_rendering(tmp_path):
    grid = decode_grid(lambda q: torch.stack([q.norm(dim=-1) - 0.5, (q - 0.3).norm(dim=-1) - 0.2], -1),
                       resolution=25)
    meshes = grid_meshes(grid)
    paths = export_meshes(tmp_path / "meshes", "case_0007", meshes, ["big", "small"])
    assert [p.name for p in paths] == ["case_0007_big.ply", "case_0007_small.ply"]
    back = read_ply(paths[0])
    np.testing.assert_allclose(back.vertices, meshes[0].vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, meshes[0].faces)
    assert not list((tmp_path / "meshes").glob(".*"))  # no temporary files left behind
    gt, _, _ = sample_surface(meshes[0], 500, np.random.default_rng(0))
    png = tmp_path / "case_0007.png"
    render_comparison(png, gt, np.zeros(500, dtype=np.int64), meshes, ["big", "small"], title="case_0007")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
