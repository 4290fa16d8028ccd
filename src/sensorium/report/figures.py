"""Matplotlib figures (Agg backend: no display needed), written atomically as PNG or returned as
PNG bytes for embedding in the HTML report."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display); imported on first use, so
    modules that may draw do not pay matplotlib's import time unless they do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def save_png(fig, path: str | Path) -> Path:
    from sensorium.engine.checkpoint import atomic_write

    data = figure_png(fig)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str = ""):
    plt = pyplot()
    matrix = np.asarray(matrix, dtype=float)
    row_sums = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)
    size = 3 + 0.45 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, int(count), ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title)
    return fig


def confusion_matrix_png(matrix: np.ndarray, class_names: list[str], path: str | Path, title: str = "") -> Path:
    return save_png(confusion_matrix_figure(matrix, class_names, title), path)
