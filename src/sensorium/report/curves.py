"""Training curves from a run's metrics.csv (Lightning's CSV logger: one row per logging call,
empty cells for the metrics not logged in that call)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sensorium.report.figures import pyplot, figure_png


def read_metrics(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} for every column of metrics.csv with at least one value."""
    series: dict[str, tuple[list, list]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                xs, ys = series.setdefault(key, ([], []))
                xs.append(step)
                ys.append(float(value))
    return {k: (np.asarray(xs), np.asarray(ys)) for k, (xs, ys) in series.items()}


def run_metrics(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """read_metrics of RUN_DIR/metrics.csv, or None when the run has not logged any."""
    path = Path(run_dir) / "metrics.csv"
    return read_metrics(path) if path.is_file() else None


def keys_with(metrics: dict, prefix: str, suffix: str = "") -> list[str]:
    """The metric names that start with `prefix` and end with `suffix`, sorted."""
    return sorted(k for k in metrics if k.startswith(prefix) and k.endswith(suffix))


def curves_png(metrics: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str], title: str,
               logy: bool = False) -> bytes | None:
    keys = [k for k in keys if k in metrics]
    if not keys:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for key in keys:
        steps, values = metrics[key]
        ax.plot(steps, values, marker="o" if len(values) < 40 else None, markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def overlay_png(runs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], key: str) -> bytes | None:
    """One metric from several runs on one axis (for `sensorium compare`)."""
    present = {name: m[key] for name, m in runs.items() if key in m}
    if not present:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, (steps, values) in present.items():
        ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
