"""`sensorium report RUN_DIR`: RUN_DIR/report.html, self-contained (figures inline).

Every run gets its training curves (loss, loss terms and their shares, lr, validation metrics);
a recipe adds its own sections through the `sections(run_dir)` of the report module its registry
entry names (`sensorium.recipes.RECIPES`; welding: confusion matrix, TEST embeddings, attention share
per modality, ablation).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from sensorium.engine.checkpoint import atomic_write_text
from sensorium.errors import ConfigError
from sensorium.recipes import RECIPES
from sensorium.report.curves import curves_png, keys_with, run_metrics, small_multiples_pngs
from sensorium.report.html import Section, page


def run_recipe(run_dir: Path) -> str:
    """The recipe of a run: from its export config, else its place in runs/<recipe>/<version>."""
    export = run_dir / "export" / "config.json"
    if export.is_file():
        return json.loads(export.read_text()).get("recipe", run_dir.parent.name)
    return run_dir.parent.name


def training_curve_keys(metrics: dict) -> tuple[list[str], list[str]]:
    """(the loss axis's keys, every other per-step training key). The loss axis carries the total
    and the weighted terms the optimiser sums (the doctor's share keys name them); every other
    training quantity (unweighted losses, balancing weights, ratios, counts, norms) gets an axis of
    its own."""
    terms = [k.removeprefix("share/").removesuffix("_step") for k in keys_with(metrics, "share/", "_step")]
    loss_keys = ["train/loss_step"] + [f"train/{t}_step" for t in terms]
    return loss_keys, [k for k in keys_with(metrics, "train/", "_step") if k not in loss_keys]


def training_sections(run_dir: Path) -> list[Section]:
    metrics = run_metrics(run_dir)
    if metrics is None:
        return [Section("Training").text(f"no metrics.csv in {run_dir}", muted=True)]
    section = Section("Training curves")
    loss_keys, other_train = training_curve_keys(metrics)
    section.images([
        curves_png(metrics, loss_keys, "training loss and its weighted terms", ylabel="loss"),
        curves_png(metrics, keys_with(metrics, "share/", "_step"), "share of each term in the total loss",
                   ylabel="share"),
        curves_png(metrics, keys_with(metrics, "lr-"), "learning rate", ylabel="lr"),
        *small_multiples_pngs(metrics, other_train, "other training quantities (per step)"),
        *small_multiples_pngs(metrics, keys_with(metrics, "val/"), "validation metrics (per epoch)"),
    ])
    val_keys = keys_with(metrics, "val/")
    if val_keys:
        rows = [[k, float(metrics[k][1][-1]), float(metrics[k][1].max()), float(metrics[k][1].min())] for k in val_keys]
        section.table(["validation metric", "last", "max", "min"], rows)
    return [section]


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(run_dir, "no such run directory")
    recipe = run_recipe(run_dir)
    sections = training_sections(run_dir)
    entry = RECIPES.get(recipe)
    if entry is not None and entry.report is not None:
        sections += importlib.import_module(entry.report).sections(run_dir)
    html = page(f"sensorium · {recipe} · {run_dir.name}", sections, subtitle=str(run_dir.resolve()))
    path = atomic_write_text(run_dir / "report.html", html)
    print(f"[report] wrote {path}")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium report", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    write_report(parser.parse_args(argv).run_dir)
    return 0
