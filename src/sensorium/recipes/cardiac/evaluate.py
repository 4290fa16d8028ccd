"""`sensorium eval cardiac --ckpt RUN/checkpoints/best.ckpt [--data.root DIR] [overrides]`

Runs the cardiac task's test on the TEST split (val chose the checkpoint; a dataset without test
cases is refused) and writes RUN/eval/cardiac.json: per-structure and mean IoU of the inside region
(SDF < 0) on every volume and near-surface point of each case (and on each kind alone), Chamfer
distance (normalised units and mm) and F-score between meshes of a decoded grid and the
ground-truth surface samples; the voxel metrics in each volume's own grid (per-structure Dice, HD95
and ASSD in mm, predicted and true volumes in mL, overlap and gap in mL; see `task.voxel_report`);
RUN/eval/meshes/<case>_<structure>.ply and RUN/eval/render_<case>.png. Then the mean-shape
baseline on the same cases (RUN/eval/mean_shape.json, see `mean_shape_baseline`). The run's own
config.yaml rebuilds the model; `--config` names another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sensorium.errors import DataError
from sensorium.recipes.cardiac.reader import case_path, npz_memmap, read_split_csv, voxel_to_normalised


def interpolate_grid(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of an (R, R, R, C) grid over [-1, 1]^3 (indexed [i, j, k] along x,
    y, z, as `sensorium.eval.shapes.grid_points`) at points (P, 3) -> (P, C)."""
    from scipy.ndimage import map_coordinates

    coords = ((np.asarray(points, dtype=np.float64) + 1.0) / 2.0 * (grid.shape[0] - 1)).T  # (3, P) grid indices
    return np.stack([map_coordinates(grid[..., c], coords, order=1, mode="nearest")
                     for c in range(grid.shape[-1])], axis=-1)


def voxel_points(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(X', Y', Z', 3) normalised centres of a prepared case's `voxel_labels` voxels."""
    shape = np.asarray(arrays["voxel_labels"]).shape
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)  # (X', Y', Z', 3)
    matrix = voxel_to_normalised(arrays)
    return index @ matrix[:3, :3].T + matrix[:3, 3]


def grid_voxel_masks(grid: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(C, X', Y', Z') bool: inside (SDF < 0) of an (R, R, R, C) grid over [-1, 1]^3, interpolated at
    the case's voxel centres; voxels outside the cube are outside (as the model's decoding)."""
    points = voxel_points(arrays).reshape(-1, 3)
    inside = np.zeros((len(points), grid.shape[-1]), dtype=bool)
    keep = np.all(np.abs(points) <= 1.0, axis=1)
    inside[keep] = interpolate_grid(grid, points[keep]) < 0
    return inside.T.reshape(grid.shape[-1], *np.asarray(arrays["voxel_labels"]).shape)


def mean_shape_baseline(root: str | Path, split: str = "test", fscore_threshold: float = 0.02,
                        mesh_samples: int = 10000, voxel_metrics: bool = True) -> dict:
    """The trivial predictor "every heart is the mean heart", measured like the model.

    The mean shape is the mean of the training cases' SDF grids (`grid_sdf`, stored by `sensorium
    prepare cardiac`), per structure: the mean signed distance field, whose zero level is the
    average surface. It is interpolated (trilinearly) at each evaluation case's volume and
    near-surface points for the IoU, and its marching-cubes meshes are compared with each case's
    surface samples for Chamfer distance and F-score. The grid's resolution limits it a little
    (interpolating a case's own grid is not exact either); `self_iou` reports that ceiling: the
    IoU of each evaluation case's own grid at its own points. With `voxel_metrics`, the mean grid
    interpolated at each case's voxel centres is scored like the model (Dice, HD95, ASSD, volumes,
    overlap, gap; `task.voxel_report`).
    """
    from sensorium.eval.segmentation import label_masks, segmentation_metrics
    from sensorium.eval.shapes import class_iou, grid_meshes, mesh_metrics
    from sensorium.recipes.cardiac.task import voxel_report

    root = Path(root)
    splits = read_split_csv(root / "split.csv")
    if not splits.get("train") or not splits.get(split):
        raise DataError(root / "split.csv", f"the mean-shape baseline needs train and {split} cases")

    def arrays(case_id: str) -> dict[str, np.ndarray]:
        path = case_path(root, case_id)
        data = npz_memmap(path)
        if "grid_sdf" not in data:
            raise DataError(path, "no grid_sdf: prepared without an SDF grid "
                                  "(`sensorium prepare cardiac --grid-resolution 32`)")
        return data

    mean_grid = np.mean([np.asarray(arrays(c)["grid_sdf"], dtype=np.float64) for c in splits["train"]], axis=0)
    first = arrays(splits[split][0])
    names = [str(n) for n in np.array(first["class_names"])]
    meshes = grid_meshes(mean_grid.astype(np.float32))
    ious, self_ious, chamfer, fscore, voxels = [], [], [], [], []
    for case_id in splits[split]:
        data = arrays(case_id)
        if voxel_metrics:
            if "voxel_labels" not in data:
                raise DataError(case_path(root, case_id), "no voxel_labels: prepared by an older `sensorium prepare "
                                                          "cardiac`; prepare it again")
            labels = np.asarray(data["voxel_labels"])
            affine = np.asarray(data["affine"], dtype=np.float64)[:3, :3]
            voxels.append(segmentation_metrics(grid_voxel_masks(mean_grid, data), label_masks(labels, len(names)),
                                               np.linalg.norm(affine, axis=0), abs(np.linalg.det(affine))))
        points = np.concatenate([data["vol_points"], data["near_points"]])
        target = torch.from_numpy(np.concatenate([data["vol_sdf"], data["near_sdf"]]))
        ious.append(class_iou(torch.from_numpy(interpolate_grid(mean_grid, points)), target))
        self_ious.append(class_iou(torch.from_numpy(interpolate_grid(np.asarray(data["grid_sdf"]), points)), target))
        metrics = mesh_metrics(meshes, np.asarray(data["surface_points"]), np.asarray(data["surface_labels"]), names,
                               fscore_threshold, mesh_samples)
        chamfer.append([metrics[n]["chamfer"] for n in names])
        fscore.append([metrics[n]["fscore"] for n in names])
    class_iou_mean = torch.nanmean(torch.stack(ious).double(), dim=0)
    class_chamfer = np.nanmean(np.asarray(chamfer, dtype=np.float64), axis=0)
    tables = {k: torch.tensor(np.array([v[k] for v in voxels]), dtype=torch.float64) for k in voxels[0]} if voxels else {}
    voxel = voxel_report(tables, names, "the mean SDF grid, trilinear at the voxel centres of each case's own label "
                                        "crop") if voxels else {}
    return {
        "predictor": f"mean SDF of the {len(splits['train'])} training cases ({mean_grid.shape[0]}^3 grid, "
                     "trilinear)",
        "split": split,
        "num_cases": len(splits[split]),
        "mean_iou": float(class_iou_mean.mean()),
        "class_iou": {n: float(v) for n, v in zip(names, class_iou_mean)},
        "chamfer": float(np.nanmean(class_chamfer)),
        "class_chamfer": {n: float(v) for n, v in zip(names, class_chamfer)},
        "fscore": float(np.mean(fscore)),
        "self_iou": float(torch.nanmean(torch.stack(self_ious).double())),
        "fscore_threshold": fscore_threshold,
        **voxel,
    }


def main(argv: list[str]) -> int:
    from sensorium.engine.checkpoint import atomic_write_json
    from sensorium.eval.checkpoint import eval_parser, test_checkpoint

    parser = eval_parser("sensorium eval cardiac", __doc__)
    parser.add_argument("--no-mean-shape", action="store_true", help="skip the mean-shape baseline")
    args, overrides = parser.parse_known_args(argv)
    cli = test_checkpoint(args.ckpt, args.config, overrides)
    print(f"[eval] wrote {cli.run_dir / 'eval' / 'cardiac.json'}")
    if not args.no_mean_shape:
        baseline = mean_shape_baseline(cli.datamodule.root, "test", cli.model.eval_config.fscore_threshold,
                                       cli.model.eval_config.mesh_samples, cli.model.eval_config.voxel_metrics)
        path = atomic_write_json(cli.run_dir / "eval" / "mean_shape.json", baseline)
        print(f"[eval] mean-shape baseline: mean IoU {baseline['mean_iou']:.4f}, Chamfer {baseline['chamfer']:.4f} "
              f"-> {path}")
    return 0
