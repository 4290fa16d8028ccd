"""Cardiac sections of the report: the shape evaluation (IoU, Chamfer distance, F-score) next to
the baselines, per-structure results, the field's voxel metrics (Dice, HD95, ASSD, volumes, overlap,
gap) as a per-structure table and box plots over the test cases (also written to
RUN/eval/structures_boxplot.png), per-structure IoU and loss-term shares over training, and the
ground truth vs reconstruction renderings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sensorium.report.curves import curves_png, curves_pngs, keys_with, run_metrics
from sensorium.report.html import Section


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def sections(run_dir: Path) -> list[Section]:
    eval_dir = run_dir / "eval"
    report = _read(eval_dir / "cardiac.json")
    out = _training_sections(run_dir)
    if report is None:
        return out + [Section("Shape evaluation").text(
            f"no eval/cardiac.json yet: run `sensorium eval cardiac --ckpt {run_dir}/checkpoints/best.ckpt`", muted=True)]
    baselines = {"untrained model": _read(eval_dir / "untrained.json"), "mean shape": _read(eval_dir / "mean_shape.json")}
    baselines = {k: v for k, v in baselines.items() if v is not None}

    def value(block: dict, key: str):
        return block.get(key) if block.get(key) is not None else "n/a"

    summary = Section(f"Shape evaluation on {report['split']} ({report['num_cases']} cases)")
    keys = [("mean IoU (volume + near points)", "mean_iou"), ("IoU on volume points", "iou_volume"),
            ("IoU on near-surface points", "iou_near"), ("Chamfer distance (normalised)", "chamfer"),
            ("Chamfer distance (mm)", "chamfer_mm"), (f"F-score @ {report['fscore_threshold']}", "fscore")]
    summary.table(["metric", "model", *baselines], [[label, value(report, key), *(value(b, key) for b in baselines.values())]
                                                   for label, key in keys])
    summary.text(f"{report['model']}. IoU of the inside region (SDF < 0) on {report['iou_points']}, averaged over "
                 f"cases; meshes by marching cubes on a {report['grid_resolution']}^3 decoded grid; "
                 f"{report['missing_surfaces']} (case, structure) pairs without a reconstructed surface.", muted=True)
    if "mean shape" in baselines:
        summary.text(f"mean shape: {baselines['mean shape']['predictor']}; a case's own grid interpolated the same way "
                     f"scores {baselines['mean shape']['self_iou']:.3f} (the grid's ceiling).", muted=True)

    names = report["structures"]
    per_class = Section("Per structure")
    header = ["structure", "IoU", *(f"IoU {k}" for k in baselines), "Chamfer", "F-score"]
    per_class.table(header, [[n, value(report["class_iou"], n), *(value(b["class_iou"], n) for b in baselines.values()),
                              value(report["class_chamfer"], n), value(report["class_fscore"], n)] for n in names])
    out += [summary, per_class]
    if "dice" in report:
        out.append(_voxel_section(report, baselines, eval_dir))

    renders = sorted(eval_dir.glob("render_*.png"))
    if renders:
        section = Section("Ground truth vs reconstruction")
        for png in renders:
            section.image(png.read_bytes(), alt=png.stem)
        meshes = eval_dir / "meshes"
        if meshes.is_dir():
            section.text(f"{len(list(meshes.glob('*.ply')))} meshes (one per case and structure) in {meshes}", muted=True)
        out.append(section)
    return out


BOXPLOT_METRICS = (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("assd_mm", "ASSD (mm)"),
                   ("volume_error_ml", "volume error, prediction - truth (mL)"))


def structures_boxplot(report: dict):
    """A figure of box plots over the test cases, one box per structure, for each voxel metric."""
    from sensorium.report.figures import pyplot

    plt = pyplot()
    names, cases = report["structures"], list(report["cases"].values())
    fig, axes = plt.subplots(len(BOXPLOT_METRICS), 1, figsize=(max(7.0, 0.75 * len(names)), 2.6 * len(BOXPLOT_METRICS)),
                             sharex=True)
    for ax, (key, label) in zip(axes, BOXPLOT_METRICS):
        values = [[c[key][n] for c in cases if c.get(key, {}).get(n) is not None] for n in names]
        ax.boxplot([v if v else [np.nan] for v in values], showmeans=True)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        if key == "volume_error_ml":
            ax.axhline(0.0, color="grey", lw=0.8)
    axes[-1].set_xticks(range(1, len(names) + 1), names, rotation=35, ha="right")
    axes[0].set_title(f"{report['split']} split, {report['num_cases']} cases: one box per structure "
                      "(median, quartiles, 1.5 IQR whiskers; triangle: mean)")
    fig.tight_layout()
    return fig


def _voxel_section(report: dict, baselines: dict[str, dict], eval_dir: Path) -> Section:
    from sensorium.engine.checkpoint import atomic_write
    from sensorium.report.figures import figure_png

    def value(block: dict | None, key: str):
        return block.get(key) if block and block.get(key) is not None else "n/a"

    names = report["structures"]
    shape_baselines = {k: b for k, b in baselines.items() if "dice" in b}
    section = Section(f"Voxel metrics on {report['split']} (each volume's own grid)")
    keys = [("mean Dice", "mean_dice"), ("mean HD95 (mm)", "mean_hd95_mm"), ("mean ASSD (mm)", "mean_assd_mm"),
            ("volume error, mean |prediction - truth| (mL)", "volume_error_ml"),
            ("overlap: inside two structures at once (mL)", "overlap_ml"),
            ("gap: truth inside no predicted structure (mL)", "gap_ml"), ("true total volume (mL)", "true_total_ml")]
    section.table(["metric", "model", *shape_baselines],
                  [[label, value(report, key), *(value(b, key) for b in shape_baselines.values())] for label, key in keys])
    volumes = report["volume_ml"]
    section.table(["structure", "Dice", *(f"Dice {k}" for k in shape_baselines), "HD95 (mm)", "ASSD (mm)",
                   "predicted (mL)", "true (mL)", "mean error (mL)", "mean |error| (mL)"],
                  [[n, value(report["dice"], n), *(value(b["dice"], n) for b in shape_baselines.values()),
                    value(report["hd95_mm"], n), value(report["assd_mm"], n), value(volumes[n], "pred"),
                    value(volumes[n], "true"), value(volumes[n], "error"), value(volumes[n], "abs_error")]
                   for n in names])
    section.text(f"Means over the {report['num_cases']} test cases. {report['voxel_metrics']}. "
                 f"{report['undefined_surface_distances']} (case, structure) pairs with an empty prediction have no "
                 "surface distance and are left out of HD95 / ASSD.", muted=True)
    fig = structures_boxplot(report)
    png = figure_png(fig)
    atomic_write(eval_dir / "structures_boxplot.png", lambda tmp: tmp.write_bytes(png))
    section.image(png, alt="per-structure box plots over test cases")
    return section


def _training_sections(run_dir: Path) -> list[Section]:
    metrics = run_metrics(run_dir)
    if metrics is None:
        return []
    section = Section("Per-structure IoU and loss terms over training")
    section.images([
        *curves_pngs(metrics, ["val/mean_iou"] + keys_with(metrics, "val/iou/"),
                     "validation IoU per structure (per epoch)", ylabel="IoU"),
        curves_png(metrics, keys_with(metrics, "share/", "_epoch"),
                   "share of each loss term in the total (epoch means)"),
        curves_png(metrics, keys_with(metrics, "train/", "_epoch"), "weighted loss terms (epoch means)", logy=True),
    ])
    shares = {k.removeprefix("share/").removesuffix("_epoch"): float(metrics[k][1][-1])
              for k in keys_with(metrics, "share/", "_epoch")}
    if shares:
        section.table(["loss term", "share of the total, last epoch"], [[k, v] for k, v in sorted(shares.items())])
    return [section] if section.parts else []
