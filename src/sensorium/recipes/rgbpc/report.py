"""rgbpc sections of the report: retrieval curves over training and the held-out retrieval table, the
action-head table (the four feature sources and the gap closed), the positive / negative similarity
histogram, the fusion weights or gates per encoder, and the depth probe."""

from __future__ import annotations

import json
from pathlib import Path

from sensorium.report.curves import curves_png, keys_with, run_metrics
from sensorium.report.html import Section

SOURCE_NAMES = {"pc": "(a) point-cloud features (teacher)", "rgb_aligned": "(b) aligned fused RGB",
                "rgb_raw": "(c) raw RGB, untrained adapters", "student": "(d) distilled RGB-only student"}


def sections(run_dir: Path) -> list[Section]:
    out = _training_sections(run_dir)
    path = run_dir / "eval" / "rgbpc.json"
    if not path.is_file():
        return out + [Section("Evaluation").text(f"no eval/rgbpc.json yet: run `sensorium eval rgbpc --ckpt "
                                                 f"{run_dir}/checkpoints/best.ckpt`", muted=True)]
    report = json.loads(path.read_text())

    def value(key: str):
        return report.get(key) if report.get(key) is not None else "n/a"

    retrieval = Section(f"Point-to-patch retrieval on {report['held_out_episodes']} held-out episodes")
    rows = [[label, value(key), value(f"raw_{key}"), chance]
            for label, key, chance in (
                ("point -> patch top-1", "point_top1", report["chance_top1"]),
                ("point -> patch top-5", "point_top5", report["chance_top5"]),
                ("patch -> point top-1", "patch_top1", report["chance_top1"]),
                ("patch -> point top-5", "patch_top5", report["chance_top5"]),
                ("point -> patch top-1, hit within one patch", "point_top1_within_patch", "-"),
                ("point -> patch top-5, hit within one patch", "point_top5_within_patch", "-"),
                ("set level top-1", "set_top1", report["set_chance_top1"]),
                ("set level top-5", "set_top5", min(1.0, 5 * report["set_chance_top1"])))]
    retrieval.table(["metric", "aligned", "untrained adapters", "chance"], rows)
    retrieval.text(f"Candidates per query: {report['candidates']:.0f} points ({report['retrieval_batches']} batches "
                   f"of held-out steps); set level: {report['set_candidates']:.0f} windows.", muted=True)
    histogram = run_dir / "eval" / "similarity_histogram.png"
    if histogram.is_file():
        retrieval.image(histogram.read_bytes(), alt="similarity histogram")
    out.append(retrieval)

    if "action" in report:
        action = report["action"]
        section = Section("The action-head test")
        section.table(["features", "action error", "std over seeds"],
                      [[SOURCE_NAMES.get(s, s), e, action["detail"][s]["std"]] for s, e in action["error"].items()])
        closed = action["gap_closed"]
        student = action.get("student_gap_closed")
        section.text(f"Share of the raw RGB -> point-cloud gap closed: aligned {closed if closed is None else round(closed, 3)}"
                     + (f", student {student:.3f}" if student is not None else "") + ".")
        section.text(f"One head (PointNet-style, {action['points_per_step']} points per step) fitted on "
                     f"{action['train_steps']} steps of {action['train_episodes']} training episodes, tested on "
                     f"{action['test_steps']} held-out steps; error: {action['metric']}.", muted=True)
        out.append(section)

    fusion = report.get("fusion", {})
    section = Section(f"Fusion over encoders ({fusion.get('mode', 'n/a')})")
    shares = fusion.get("weights") or fusion.get("mean") or {}
    section.table(["encoder", "weight" if "weights" in fusion else "mean gate", "std over steps"],
                  [[e, w, (fusion.get("std") or {}).get(e, "-")] for e, w in shares.items()])
    out.append(section)
    if report.get("depth_probe"):
        section = Section("Linear depth probe per point (held-out)")
        section.table(["features", "R^2", "RMSE (m)"],
                      [[SOURCE_NAMES.get(s, s), d["r2"], d["rmse"]] for s, d in report["depth_probe"].items()])
        out.append(section)
    return out


def _training_sections(run_dir: Path) -> list[Section]:
    metrics = run_metrics(run_dir)
    if metrics is None:
        return []
    section = Section("Retrieval and fusion over training")
    section.images([
        curves_png(metrics, ["val/point_top1", "val/patch_top1", "val/point_top1_within_patch", "val/set_top1",
                             "val/chance_top1"], "validation retrieval top-1 (per epoch)"),
        curves_png(metrics, keys_with(metrics, "fusion/"), "mean fusion weight per encoder (per epoch)"),
        curves_png(metrics, ["train/masked_negatives_epoch"], "same-patch pairs left out of the negatives, per point"),
    ])
    return [section] if section.parts else []
