"""Tactile sections of the report: the loss decomposition and each task's contribution over the
steps (the PhysioTouch note's metrics), the weights, the evaluation table (trained against the
untrained encoder when eval/tactile_untrained.json exists) and the picture grids per sensor."""

from __future__ import annotations

import json
from pathlib import Path

from sensorium.report.curves import curves_png, run_metrics
from sensorium.report.html import Section

CURVES = [
    (["loss_total", "loss_static", "loss_dynamic", "loss_recon", "loss_pred"],
     "loss decomposition (unweighted terms; loss_dynamic = loss_recon + loss_pred)"),
    (["weighted_static", "weighted_dynamic"], "weighted terms (alpha x loss_static, beta x loss_dynamic)"),
    (["static_contribution", "dynamic_contribution"], "each task's share of the weighted total"),
    (["alpha", "beta"], "task weights"),
    (["loss_ratio"], "loss_static / loss_dynamic"),
    (["grad_norm"], "gradient norm (before clipping)"),
]
VAL_CURVES = [
    (["pred_mse_ratio", "pred_mse_ratio_masked", "pixel_pred_mse_ratio"],
     "validation: frame-4 prediction MSE / copy-frame-3 MSE (1 = copying)"),
    (["knn_accuracy"], "validation: k-NN accuracy on the indenter class"),
    (["psnr_masked"], "validation: masked-patch PSNR (dB)"),
]
TABLE = [
    ("pred_mse_ratio", "frame-4 MSE / copy frame 3 (target space, frames 1-3 whole)"),
    ("pixel_pred_mse_ratio", "frame-4 MSE / copy frame 3 (pixels)"),
    ("pred_mse_ratio_masked", "frame-4 MSE / copy frame 3 (target space, frames 1-3 masked as trained)"),
    ("pred_mse", "frame-4 MSE (target space)"),
    ("copy_mse", "copy-frame-3 MSE (target space)"),
    ("psnr_masked", "masked-patch PSNR (dB)"),
    ("psnr_masked_flat", "masked-patch PSNR of a flat patch at the true mean (dB)"),
    ("knn_accuracy", "k-NN accuracy, indenter class (frozen features)"),
    ("linear_probe_accuracy", "linear-probe accuracy, indenter class (frozen features)"),
]


def sections(run_dir: Path) -> list[Section]:
    out = [_curves(run_dir), _evaluation(run_dir)]
    grids = sorted((run_dir / "eval").glob("grid_*.png"))
    if grids:
        pictures = Section("Reconstructions and frame-4 predictions (TEST)")
        pictures.text("Columns: frame 3, frame 4, frame 4 masked as in training, its reconstruction (visible "
                      "patches pasted back), frame 4 predicted from whole frames 1-3.", muted=True)
        for path in grids:
            pictures.image(path.read_bytes(), path.stem)
        out.append(pictures)
    return out


def _curves(run_dir: Path) -> Section:
    section = Section("Static and dynamic tasks over the steps")
    metrics = run_metrics(run_dir)
    if metrics is None:
        return section.text(f"no metrics.csv in {run_dir}", muted=True)
    for names, title in CURVES:
        section.images([curves_png(metrics, [f"train/{n}_step" for n in names], title)], title)
    for names, title in VAL_CURVES:
        section.images([curves_png(metrics, [f"val/{n}" for n in names], title)], title)
    epoch_keys = [f"train/{n}_epoch" for names, _ in CURVES[:3] for n in names]
    rows = [[k.removeprefix("train/").removesuffix("_epoch"), float(metrics[k][1][-1])]
            for k in epoch_keys if k in metrics]
    if rows:
        section.table(["last epoch (mean over its steps)", "value"], rows)
    return section


def _evaluation(run_dir: Path) -> Section:
    section = Section("Evaluation on TEST objects")
    path = run_dir / "eval" / "tactile.json"
    if not path.is_file():
        return section.text(f"no eval/tactile.json yet: run `sensorium eval tactile --ckpt "
                            f"{run_dir}/checkpoints/best.ckpt --untrained`", muted=True)
    trained = json.loads(path.read_text())
    untrained_path = run_dir / "eval" / "tactile_untrained.json"
    untrained = json.loads(untrained_path.read_text()) if untrained_path.is_file() else {}
    rows = [[label, trained[key], untrained.get(key, "")] for key, label in TABLE if key in trained]
    section.table(["metric", "trained", "untrained (same encoder at initialisation)"], rows)
    for pool in ("mean", "cls"):
        probes = trained.get(f"probes_{pool}")
        if probes:
            base = untrained.get(f"probes_{pool}", {})
            protocol = {"none": "raw", "bank": "standardised on the bank",
                        "sensor": "standardised per sensor"}[probes.get("standardize", "none")]
            section.text(f"{pool} pooling ({protocol}): k-NN "
                         f"{probes['knn_accuracy']:.3f} (untrained "
                         f"{base.get('knn_accuracy', float('nan')):.3f}), linear probe "
                         f"{probes['linear_probe_accuracy']:.3f} (untrained "
                         f"{base.get('linear_probe_accuracy', float('nan')):.3f}); bank {probes['bank_size']}, "
                         f"queries {probes['query_size']}, chance {probes['chance']:.3f}", muted=True)
    section.text(f"{trained['num_samples']} TEST windows; mask ratio {trained['mask_ratio']}, norm_pix "
                 f"{trained['norm_pix']}. A frame-4 ratio below 1 means the model predicts frame 4 better "
                 "than copying frame 3.", muted=True)
    return section
