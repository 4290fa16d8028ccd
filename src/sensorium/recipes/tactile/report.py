"""Tactile sections of the report: the loss decomposition and each task's contribution over the
steps (the PhysioTouch note's metrics), the weights, the distribution of the cosine between the two
tasks' gradients on the shared encoder (`train/grad_cosine`, joint mode), the evaluation table
(trained against the untrained encoder when eval/tactile_untrained.json exists) and the picture
grids per sensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sensorium.report.curves import curves_png, run_metrics
from sensorium.report.figures import figure_png, pyplot
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
    ("force_r2", "force R^2 (ridge probe, frozen features)"),
    ("force_rmse", "force RMSE (N)"),
    ("contact_mm", "contact-centre error (mm, contact frames)"),
    ("slip_f1", "slip F1 (sliding vs static contact, logistic probe)"),
]
CONSTANTS = [
    ("force_r2_constant", "force R^2 of the train + val mean"),
    ("force_rmse_constant", "force RMSE of the train + val mean (N)"),
    ("contact_mm_constant", "contact error of the train + val mean centre (mm)"),
    ("slip_f1_constant", "slip F1 of 'always sliding'"),
]


def sections(run_dir: Path) -> list[Section]:
    out = [_curves(run_dir), _grad_cosine(run_dir), _evaluation(run_dir)]
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


def training_mode(run_dir: Path) -> str | None:
    """The run's training mode in words, from its config.yaml (None where there is none)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    loss = ((config.get("model") or {}).get("init_args") or {}).get("loss") or {}
    mode = loss.get("mode", "joint")
    if mode != "joint":
        return mode
    if loss.get("balance"):
        return f"joint, balanced to a static share of {loss.get('target_share', 0.5):g}"
    return f"joint, alpha {loss.get('alpha', 0.5):g} / beta {loss.get('beta', 0.5):g}"


def cosine_summary(values: np.ndarray) -> dict[str, float]:
    """Count, mean, quartiles, 10th / 90th percentiles and the share of conflicting steps (< 0)."""
    q10, q25, q50, q75, q90 = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": len(values), "mean": float(values.mean()), "p10": q10, "q25": q25, "median": q50, "q75": q75,
            "p90": q90, "negative": float((values < 0).mean())}


def _grad_cosine(run_dir: Path) -> Section:
    section = Section("Do the static and dynamic tasks pull the encoder the same way? (train/grad_cosine)")
    mode = training_mode(run_dir) or "mode unknown (no config.yaml)"
    metrics = run_metrics(run_dir) or {}
    if "train/grad_cosine" not in metrics:
        why = ("alternating mode runs one task per batch, so no batch has two gradients to compare"
               if mode == "alternating" else "not logged (model.init_args.reading.grad_cosine_every: 0, or no "
                                             "training step reached it)")
        return section.text(f"{mode}: {why}.", muted=True)
    steps, values = metrics["train/grad_cosine"]
    stats = cosine_summary(values)
    plt = pyplot()
    fig, (hist, trace) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 1.4]})
    hist.hist(values, bins=np.linspace(-1, 1, 41), color="tab:blue", alpha=0.8)
    hist.boxplot(values, vert=False, positions=[hist.get_ylim()[1] * 1.08], widths=hist.get_ylim()[1] * 0.08,
                 manage_ticks=False)
    hist.axvline(0, color="black", lw=0.8)
    hist.set_xlabel("cosine (static, dynamic) gradients on the encoder")
    hist.set_ylabel("steps")
    hist.set_title(f"{mode}: distribution", fontsize=9)
    trace.plot(steps, values, marker="o" if len(values) < 40 else None, markersize=3)
    trace.axhline(0, color="black", lw=0.8)
    trace.set_xlabel("step")
    trace.set_title("over the steps", fontsize=9)
    trace.grid(alpha=0.3)
    section.image(figure_png(fig), "grad_cosine")
    section.table(["training mode", "steps measured", "mean", "10%", "25%", "median", "75%", "90%",
                   "share < 0 (conflicting)"],
                  [[mode, stats["n"], stats["mean"], stats["p10"], stats["q25"], stats["median"], stats["q75"],
                    stats["p90"], stats["negative"]]])
    section.text("Cosine between the gradients of loss_static and loss_dynamic with respect to the shared "
                 "encoder's parameters, on one training batch every `reading.grad_cosine_every` batches. Near 1 "
                 "the two tasks agree; below 0 they pull apart. The note's 'joint training gives more stable "
                 "gradients' reads as: compare these distributions between runs of different modes "
                 "(`sensorium compare`); an alternating run steps on one task's gradient at a time and logs none.",
                 muted=True)
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
    contact, contact_base = trained.get("contact_probes", {}), untrained.get("contact_probes", {})
    rows += [[label, contact[key], contact_base.get(key, "")] for key, label in CONSTANTS if key in contact]
    section.table(["metric", "trained", "untrained (same encoder at initialisation)"], rows)
    if contact:
        skipped = contact.get("skipped")
        if isinstance(skipped, str):
            section.text(f"force / contact / slip probes: not run ({skipped}).", muted=True)
        else:
            chosen = ", ".join(f"{k.split('_')[0]} {k.split('_')[1]} {contact[k]:g}"
                               for k in ("force_alpha", "contact_alpha", "slip_c") if k in contact)
            sizes = "; ".join(f"{name} {'/'.join(map(str, n))}" for name, n in contact.get("sizes", {}).items())
            section.text("Force / contact / slip: linear probes (ridge; logistic with balanced classes) of the frozen "
                         "features, fitted on TRAIN, regularisation chosen on VAL (" + (chosen or "none") + "), "
                         "refitted on train + val, scored on TEST (windows train/val/test: " + sizes + ")"
                         + "".join(f"; {name} not run: {why}" for name, why in (skipped or {}).items()) + ".",
                         muted=True)
    for pool in ("mean", "cls"):
        probes = trained.get(f"probes_{pool}")
        if probes:
            base = untrained.get(f"probes_{pool}", {})
            protocol = {"none": "raw", "bank": "standardised on the bank",
                        "sensor": "standardised per sensor"}[probes.get("standardize", "none")]
            protocol += ", relative to the reference frame" if probes.get("reference") else ""
            section.text(f"{pool} pooling ({protocol}): k-NN "
                         f"{probes['knn_accuracy']:.3f} (untrained "
                         f"{base.get('knn_accuracy', float('nan')):.3f}), linear probe "
                         f"{probes['linear_probe_accuracy']:.3f} (untrained "
                         f"{base.get('linear_probe_accuracy', float('nan')):.3f}); bank {probes['bank_size']}, "
                         f"queries {probes['query_size']}, chance {probes['chance']:.3f}", muted=True)
    for name, report in (("trained", trained), ("untrained", untrained)):
        chosen = report.get("protocol", {})
        if chosen.get("chosen_on") == "val":
            section.text(f"Probe protocol of the {name} encoder chosen on VAL before TEST was read (best val k-NN "
                         f"{chosen['val_knn_accuracy']:.3f} of {len(chosen['val_knn'])} candidates): {chosen['pool']} "
                         f"pooling{', relative to the reference frame' if chosen['reference'] else ''}, standardize "
                         f"{chosen['standardize']}, k {chosen['k']}.", muted=True)
    section.text(f"{trained['num_samples']} TEST windows; mask ratio {trained['mask_ratio']}, norm_pix "
                 f"{trained['norm_pix']}. A frame-4 ratio below 1 means the model predicts frame 4 better "
                 "than copying frame 3.", muted=True)
    return section
