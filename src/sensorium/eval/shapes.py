"""Shape metrics for multi-class SDF models: per-structure IoU of the inside region, meshes from a
decoded SDF grid, Chamfer distance and F-score against ground-truth surface samples, PLY export and
a ground truth vs reconstruction rendering.

Convention: SDF < 0 inside (as in `sensorium.data.sdf`); coordinates in the prepared data's
normalised box [-1, 1]^3, so distances here are in normalised units.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from sensorium.data.sdf import TriangleMesh, sample_surface


# --- IoU ------------------------------------------------------------------------------------------
def class_iou(pred_sdf: torch.Tensor | np.ndarray, target_sdf: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of the inside regions (SDF < 0) per structure, over sample points.

    Args:
        pred_sdf, target_sdf: (..., P, C) SDF at the same P points (e.g. val volume + near points),
            with any leading batch dimensions.

    Returns:
        (..., C) float IoU per sample and structure; NaN where neither prediction nor target has an
        inside point (undefined, left out of means by `mean_iou`).
    """
    pred = torch.as_tensor(pred_sdf) < 0
    target = torch.as_tensor(target_sdf) < 0
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    intersection = (pred & target).sum(dim=-2).double()  # (..., C)
    union = (pred | target).sum(dim=-2).double()
    undefined = torch.full_like(union, float("nan"))
    return torch.where(union > 0, intersection / union.clamp_min(1), undefined).float()


def mean_iou(iou: torch.Tensor) -> float:
    """Mean of a (..., C) IoU table over everything defined (NaN entries left out)."""
    return float(torch.nanmean(iou.double()))


# --- decoding a grid ------------------------------------------------------------------------------
def grid_points(resolution: int, bound: float = 1.0) -> torch.Tensor:
    """(R^3, 3) points of a regular grid over [-bound, bound]^3, x-major (index order i, j, k)."""
    axis = torch.linspace(-bound, bound, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)  # (R^3, 3)


@torch.no_grad()
def decode_grid(decode: Callable[[torch.Tensor], torch.Tensor], resolution: int = 64, bound: float = 1.0,
                chunk: int = 32768, device: torch.device | str | None = None) -> np.ndarray:
    """SDF on a regular grid, decoded in chunks of queries.

    Args:
        decode: maps query points (1, Q, 3) to SDF (1, Q, C), e.g.
            `lambda q: model.query_sdf(context, q)` with the context of one shape.
        resolution: R grid points per axis over [-bound, bound].

    Returns:
        (R, R, R, C) float32 numpy array, indexed [i, j, k] along x, y, z.
    """
    points = grid_points(resolution, bound)
    if device is not None:
        points = points.to(device)
    parts = [decode(points[start:start + chunk][None])[0].float().cpu()  # (chunk, C)
             for start in range(0, len(points), chunk)]
    sdf = torch.cat(parts)  # (R^3, C)
    return sdf.reshape(resolution, resolution, resolution, -1).numpy()  # (R, R, R, C)


def grid_meshes(sdf_grid: np.ndarray, bound: float = 1.0) -> list[TriangleMesh | None]:
    """Marching cubes at level 0 of each channel of an (R, R, R, C) grid over [-bound, bound]^3.

    Returns one mesh per structure in normalised coordinates (outward normals), or None where the
    channel has no zero crossing (the structure was not reconstructed at all).
    """
    from skimage.measure import marching_cubes

    resolution = sdf_grid.shape[0]
    step = 2 * bound / (resolution - 1)
    meshes: list[TriangleMesh | None] = []
    for c in range(sdf_grid.shape[-1]):
        volume = np.pad(sdf_grid[..., c], 1, constant_values=max(float(sdf_grid[..., c].max()), step))
        if not (volume.min() < 0 < volume.max()):
            meshes.append(None)
            continue
        # Padding with a positive (outside) value closes surfaces cut by the grid's border.
        verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(step,) * 3, allow_degenerate=False)
        mesh = TriangleMesh(verts.astype(np.float64) - bound - step, faces.astype(np.int64))
        if mesh.enclosed_volume() < 0:  # SDF grows outwards: make the winding match
            mesh = TriangleMesh(mesh.vertices, np.ascontiguousarray(mesh.faces[:, ::-1]))
        meshes.append(mesh)
    return meshes


# --- Chamfer and F-score --------------------------------------------------------------------------
def _nearest(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    return cKDTree(target).query(source, k=1)[0]


def chamfer_distance(pred_points: np.ndarray, gt_points: np.ndarray) -> float:
    """Symmetric Chamfer distance: the mean of the two directions' mean nearest-neighbour (L2,
    not squared) distances between point sets (Np, 3) and (Ng, 3)."""
    return float(0.5 * (_nearest(pred_points, gt_points).mean() + _nearest(gt_points, pred_points).mean()))


def f_score(pred_points: np.ndarray, gt_points: np.ndarray, threshold: float) -> float:
    """F-score at `threshold` (Tatarchenko et al. 2019): harmonic mean of precision (share of
    predicted points within threshold of the ground truth) and recall (the converse)."""
    precision = float((_nearest(pred_points, gt_points) <= threshold).mean())
    recall = float((_nearest(gt_points, pred_points) <= threshold).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def mesh_metrics(meshes: Sequence[TriangleMesh | None], gt_points: np.ndarray, gt_labels: np.ndarray,
                 class_names: Sequence[str], threshold: float = 0.02, num_samples: int = 10000,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-structure Chamfer distance and F-score between reconstructed meshes and ground-truth
    surface samples.

    Args:
        meshes: one mesh (or None) per structure, as from `grid_meshes`.
        gt_points: (N, 3) ground-truth surface samples; gt_labels (N,) their structure.
        threshold: F-score distance (normalised units; 0.02 is about a voxel of a 128^3 heart).
        num_samples: points sampled (area-weighted) on each reconstructed mesh.

    Returns:
        {structure: {"chamfer": ..., "fscore": ...}}; a structure without a mesh gets chamfer NaN
        and fscore 0.
    """
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, float]] = {}
    for c, name in enumerate(class_names):
        gt = gt_points[gt_labels == c]
        mesh = meshes[c]
        if mesh is None or len(mesh.faces) == 0 or len(gt) == 0:
            result[name] = {"chamfer": float("nan"), "fscore": 0.0}
            continue
        pred, _, _ = sample_surface(mesh, num_samples, rng)
        result[name] = {"chamfer": chamfer_distance(pred, gt), "fscore": f_score(pred, gt, threshold)}
    return result


# --- files ----------------------------------------------------------------------------------------
def _atomic_target(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def write_ply(path: str | Path, mesh: TriangleMesh) -> None:
    """Binary little-endian PLY (float32 vertices, int32 triangle lists), written atomically."""
    path = Path(path)
    header = ("ply\nformat binary_little_endian 1.0\ncomment sensorium\n"
              f"element vertex {len(mesh.vertices)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    faces = np.empty(len(mesh.faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"], faces["v"] = 3, mesh.faces
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(mesh.vertices, dtype="<f4").tobytes())
            f.write(faces.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_ply(path: str | Path) -> TriangleMesh:
    """Read back a mesh written by `write_ply`."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    counts = {line.split()[1]: int(line.split()[2]) for line in lines if line.startswith("element")}
    nv, nf = counts["vertex"], counts["face"]
    vertices = np.frombuffer(data, dtype="<f4", count=nv * 3, offset=end).reshape(nv, 3)  # (V, 3)
    faces = np.frombuffer(data, dtype=[("n", "u1"), ("v", "<i4", (3,))], count=nf, offset=end + nv * 12)
    return TriangleMesh(vertices.astype(np.float64), faces["v"].astype(np.int64))


def export_meshes(out_dir: str | Path, case_id: str, meshes: Sequence[TriangleMesh | None],
                  class_names: Sequence[str]) -> list[Path]:
    """One `<case_id>_<structure>.ply` per reconstructed structure; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for mesh, name in zip(meshes, class_names):
        if mesh is not None:
            paths.append(out_dir / f"{case_id}_{name}.ply")
            write_ply(paths[-1], mesh)
    return paths


def render_comparison(path: str | Path, gt_points: np.ndarray, gt_labels: np.ndarray,
                      meshes: Sequence[TriangleMesh | None], class_names: Sequence[str], title: str = "",
                      points_per_class: int = 1500, seed: int = 0) -> None:
    """PNG: ground-truth surface samples (top row) and points sampled on the reconstructed meshes
    (bottom row), coloured by structure, seen along x, y and z. Written atomically (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    rows = {"ground truth": [], "reconstruction": []}
    for c in range(len(class_names)):
        gt = gt_points[gt_labels == c]
        if len(gt):
            rows["ground truth"].append((c, gt[rng.permutation(len(gt))[:points_per_class]]))
        if meshes[c] is not None:
            rows["reconstruction"].append((c, sample_surface(meshes[c], points_per_class, rng)[0]))
    views = ((1, 2, "view along x (y, z)"), (0, 2, "view along y (x, z)"), (0, 1, "view along z (x, y)"))
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    for r, (row_name, sets) in enumerate(rows.items()):
        for v, (a, b, view_name) in enumerate(views):
            ax = axes[r, v]
            for c, pts in sets:
                ax.scatter(pts[:, a], pts[:, b], s=0.6, color=colours(c % colours.N),
                           label=class_names[c] if (r, v) == (0, 0) else None)
            ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", title=f"{row_name}: {view_name}")
            ax.tick_params(labelsize=7)
    fig.legend(loc="lower center", ncol=min(5, len(class_names)), markerscale=8, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, format="png", dpi=90)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
