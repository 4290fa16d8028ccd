"""Cardiac sections of the report: the shape evaluation (IoU, Chamfer distance, F-score) next to
the baselines, per-structure results, per-structure IoU and loss-term shares over training, and the
ground truth vs reconstruction renderings."""

from __future__ import annotations

import json
from pathlib import Path

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
