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


MAX_CURVES = 6
"""Curves one axis carries at most: past that a legend covers the data and colours repeat."""


def _legend_outside(ax) -> None:
    # Beside the axes, not over the curves.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def curves_png(metrics: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str], title: str,
               logy: bool = False, ylabel: str | None = None) -> bytes | None:
    """One axis for curves of ONE quantity (one unit), at most MAX_CURVES of them, the legend beside
    the axis. More keys: `curves_pngs`; quantities of different units: `small_multiples_pngs`."""
    keys = [k for k in keys if k in metrics]
    if not keys:
        return None
    if len(keys) > MAX_CURVES:
        raise ValueError(f"{len(keys)} curves on one axis ({title}); use curves_pngs")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5 if len(keys) > 1 else 7, 3.2))
    for key in keys:
        steps, values = metrics[key]
        ax.plot(steps, values, marker="o" if len(values) < 40 else None, markersize=3, label=key)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy and all((metrics[k][1] > 0).all() for k in keys):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        _legend_outside(ax)
    return figure_png(fig)


def curves_pngs(metrics: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str], title: str,
                logy: bool = False, ylabel: str | None = None) -> list[bytes]:
    """`curves_png` over as many figures as MAX_CURVES-sized groups of `keys` need."""
    keys = [k for k in keys if k in metrics]
    groups = [keys[i:i + MAX_CURVES] for i in range(0, len(keys), MAX_CURVES)]
    return [curves_png(metrics, group, title + (f" ({n + 1} of {len(groups)})" if len(groups) > 1 else ""), logy,
                       ylabel) for n, group in enumerate(groups)]


def small_multiples_pngs(metrics: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str], title: str,
                         per_figure: int = MAX_CURVES, columns: int = 3) -> list[bytes]:
    """One small axis per metric, each on its own scale (a PSNR in dB beside a ratio near 1, a count
    beside a loss), `per_figure` axes to a figure."""
    keys = [k for k in keys if k in metrics]
    pngs = []
    for start in range(0, len(keys), per_figure):
        chunk = keys[start:start + per_figure]
        rows = -(-len(chunk) // columns)
        plt = pyplot()
        fig, axes = plt.subplots(rows, columns, figsize=(10, 2.4 * rows), squeeze=False)
        for ax, key in zip(axes.flat, chunk):
            steps, values = metrics[key]
            ax.plot(steps, values, marker="o" if len(values) < 40 else None, markersize=3)
            ax.set_title(key, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(chunk):]:
            ax.set_visible(False)
        part = f" ({start // per_figure + 1} of {-(-len(keys) // per_figure)})" if len(keys) > per_figure else ""
        fig.suptitle(title + part, fontsize=10)
        fig.tight_layout()
        pngs.append(figure_png(fig))
    return pngs


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
    _legend_outside(ax)
    return figure_png(fig)
