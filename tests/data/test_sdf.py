"""The geometry core: exact distances, mesh-consistent signs, analytic shapes, area-uniform sampling."""

from __future__ import annotations

import numpy as np
import pytest

from sensorium.data.sdf import (
    LabelSdf,
    MaskSdf,
    TriangleMesh,
    apply_affine,
    point_triangle_distance,
    sample_surface,
)


def _grid_world(shape, affine):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return apply_affine(affine, index.astype(np.float64)).reshape(*shape, 3)


def _sphere_case(shape=(40, 40, 40), radius=12.3, affine=None):
    affine = np.eye(4) if affine is None else affine
    world = _grid_world(shape, affine)
    centre = apply_affine(affine, (np.array(shape) - 1) / 2.0 + np.array([0.31, -0.17, 0.23]))
    mask = np.linalg.norm(world - centre, axis=-1) < radius
    return mask, affine, centre


def _brute_distance(points, mesh):
    return np.min([point_triangle_distance(points[:, None, :], mesh.corners[None, s:s + 500])
                   .min(axis=1) for s in range(0, len(mesh.faces), 500)], axis=0)


def _winding_number(points, mesh):
    """Generalised winding number (van Oosterom & Strackee solid angles), brute force."""
    total = np.zeros(len(points))
    for s in range(0, len(mesh.faces), 500):
        a, b, c = (mesh.corners[None, s:s + 500, i] - points[:, None, :] for i in range(3))
        la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        div = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la
               + np.einsum("pfi,pfi->pf", c, a) * lb)
        total += (2 * np.arctan2(det, div)).sum(axis=1)
    return total / (4 * np.pi)


def _query_points(rng, mesh, lo, hi, n=3000, sigma=1.0):
    uniform = rng.uniform(lo, hi, size=(n, 3))
    near = sample_surface(mesh, n, rng)[0] + rng.normal(0, sigma, size=(n, 3))
    return np.concatenate([uniform, near])


def test_sphere_sdf_within_half_a_voxel_and_signs_correct():
    mask, affine, centre = _sphere_case()
    sdf = MaskSdf(mask, affine)
    rng = np.random.default_rng(0)
    points = _query_points(rng, sdf.mesh, 0, 39)
    analytic = np.linalg.norm(points - centre, axis=1) - 12.3
    ours = sdf(points)
    assert np.abs(ours - analytic).max() <= 0.5
    clear = np.abs(analytic) > 0.5  # farther than the surface's own discretisation error
    assert np.array_equal(ours[clear] < 0, analytic[clear] < 0)


def test_box_sdf_within_half_a_voxel():
    # Faces a quarter voxel beyond the outermost inside voxel centres, edges of different lengths.
    lo, hi = np.array([6.75, 9.25, 8.75]), np.array([27.25, 20.75, 15.25])
    world = _grid_world((36, 32, 26), np.eye(4))
    mask = np.all((world > lo) & (world < hi), axis=-1)
    sdf = MaskSdf(mask, np.eye(4))
    rng = np.random.default_rng(1)
    points = _query_points(rng, sdf.mesh, 0, 25)
    q = np.abs(points - (lo + hi) / 2) - (hi - lo) / 2
    analytic = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    ours = sdf(points)
    assert np.abs(ours - analytic).max() <= 0.5
    clear = np.abs(analytic) > 0.5
    assert np.array_equal(ours[clear] < 0, analytic[clear] < 0)


def test_distance_is_exact_to_the_mesh_near_the_surface():
    mask, affine, _ = _sphere_case((24, 24, 24), radius=7.4)
    sdf = MaskSdf(mask, affine)
    rng = np.random.default_rng(2)
    points = sample_surface(sdf.mesh, 1500, rng)[0] + rng.normal(0, 0.8, size=(1500, 3))
    exact, ours = _brute_distance(points, sdf.mesh), sdf.distance(points)
    within_a_voxel = exact < 1.0  # verified against every triangle of the cells the ball reaches
    assert within_a_voxel.mean() > 0.5
    np.testing.assert_allclose(ours[within_a_voxel], exact[within_a_voxel], atol=1e-9)
    assert np.all(ours >= exact - 1e-9) and np.all(ours - exact < 0.01)  # an upper bound, and close


def test_sign_is_the_meshs_own_inside_on_a_mirrored_anisotropic_grid():
    affine = np.diag([-0.9, 1.1, 2.0, 1.0])
    affine[:3, 3] = [20.0, -5.0, 3.0]
    mask, affine, centre = _sphere_case((30, 26, 16), radius=9.3, affine=affine)
    sdf = MaskSdf(mask, affine)
    assert sdf.mesh.enclosed_volume() > 0  # outward normals despite the mirroring affine
    rng = np.random.default_rng(3)
    # Points hugging the surface: the sign must follow the extracted mesh, not the mask's voxels.
    points = sample_surface(sdf.mesh, 2000, rng)[0] + rng.normal(0, 0.3, size=(2000, 3))
    winding = _winding_number(points, sdf.mesh)
    assert np.all(np.abs(np.abs(winding - 0.5) - 0.5) < 1e-6)  # closed mesh: 0 or 1
    np.testing.assert_array_equal(sdf.inside(points), winding > 0.5)
    # And the signed distance agrees with the brute-force exact one.
    exact = np.where(winding > 0.5, -1.0, 1.0) * _brute_distance(points, sdf.mesh)
    np.testing.assert_allclose(sdf(points), exact, atol=1e-9)


def test_structure_touching_the_volume_border_gives_a_closed_surface():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:4, 2:7, 3:8] = True  # touches the x = 0 face
    sdf = MaskSdf(mask, np.eye(4))
    winding = _winding_number(np.array([[0.0, 4.0, 5.0], [-1.0, 4.0, 5.0]]), sdf.mesh)
    np.testing.assert_allclose(winding, [1.0, 0.0], atol=1e-6)
    assert sdf.inside(np.array([[0.0, 4.0, 5.0]]))[0]


def test_mesh_volume_matches_the_mask():
    mask, affine, _ = _sphere_case((32, 32, 32), radius=10.2)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    sdf = MaskSdf(mask, affine)
    # Marching cubes at 0.5 cuts each voxel corner; the volume stays within a thin shell.
    voxels = mask.sum() * 2.0
    assert abs(sdf.mesh.enclosed_volume() - voxels) / voxels < 0.05


def test_point_triangle_distance_matches_dense_sampling():
    rng = np.random.default_rng(4)
    corners = rng.normal(size=(200, 3, 3))
    points = rng.normal(scale=2.0, size=(200, 3))
    exact = point_triangle_distance(points, corners)
    u, v = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    keep = u + v <= 1
    bary = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], axis=1)  # (S, 3)
    dense = np.einsum("sk,tki->tsi", bary, corners)  # (T, S, 3)
    sampled = np.linalg.norm(dense - points[:, None], axis=-1).min(axis=1)
    assert np.all(exact <= sampled + 1e-12)  # never above a point of the triangle
    edge = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(axis=1)
    assert np.all(sampled - exact <= edge / 200 + 1e-9)  # and within the sampling resolution


def test_point_triangle_distance_regions():
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    points = np.array([[0.2, 0.2, 3.0],  # above the face
                       [0.5, -2.0, 0.0],  # beside edge ab
                       [-1.0, -1.0, 0.0],  # beyond vertex a
                       [1.0, 1.0, 0.0]])  # beside edge bc
    expected = [3.0, 2.0, np.sqrt(2.0), np.sqrt(0.5)]
    np.testing.assert_allclose(point_triangle_distance(points, tri[None]), expected, atol=1e-12)


def _box_mesh(size):
    sx, sy, sz = size
    v = np.array([[x, y, z] for x in (0, sx) for y in (0, sy) for z in (0, sz)], dtype=np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads]
    return TriangleMesh(v, np.array(faces, dtype=np.int64))


def test_surface_samples_are_uniform_by_area():
    size = np.array([8.0, 2.0, 1.0])  # faces of areas 16, 8 and 2
    mesh = _box_mesh(size)
    rng = np.random.default_rng(5)
    points, normals, faces = sample_surface(mesh, 200_000, rng)
    on_x = np.isclose(points[:, 0], 0) | np.isclose(points[:, 0], size[0])
    on_y = np.isclose(points[:, 1], 0) | np.isclose(points[:, 1], size[1])
    on_z = np.isclose(points[:, 2], 0) | np.isclose(points[:, 2], size[2])
    areas = 2 * np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    fractions = np.array([on_x.mean(), on_y.mean(), on_z.mean()])
    np.testing.assert_allclose(fractions, areas / areas.sum(), atol=0.005)
    # Uniform within a face too: the two halves of the largest face get the same count.
    top = points[np.isclose(points[:, 2], size[2])]
    assert abs((top[:, 0] < size[0] / 2).mean() - 0.5) < 0.01
    # Normals point outwards (the mesh is wound that way).
    np.testing.assert_allclose(np.abs(normals).sum(axis=1), 1.0)
    assert np.all((normals * (points - size / 2)).sum(axis=1) > 0)


def test_label_sdf_stacks_structures_in_order():
    labels = np.zeros((20, 20, 20), dtype=np.int64)
    labels[3:8, 3:8, 3:8] = 2
    labels[10:17, 10:17, 10:17] = 5
    sdf = LabelSdf(labels, np.eye(4), [5, 2])
    values = sdf(np.array([[13.0, 13.0, 13.0], [5.0, 5.0, 5.0]]))
    assert values.shape == (2, 2)
    assert values[0, 0] < 0 < values[0, 1] and values[1, 1] < 0 < values[1, 0]


def test_degenerate_inputs_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        MaskSdf(np.zeros((5, 5, 5), dtype=bool), np.eye(4))
    with pytest.raises(ValueError, match="degenerate"):
        MaskSdf(np.ones((5, 5, 5), dtype=bool), np.diag([1.0, 0.0, 1.0, 1.0]))
