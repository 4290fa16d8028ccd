"""The doppler recipe's figures (PNG): the VAE task's val reconstructions at the end of a fit, the
evaluation's real-vs-generated grid and CFG sweep, and its augmentation gain per user (bars).
`report.py` shows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sensorium.recipes.doppler.reader import to_pixels


def _grid_png(path: Path, rows: list[list[np.ndarray]], row_labels: list[str],
              column_labels: list[str] | None = None, title: str = "") -> Path:
    from sensorium.report.figures import pyplot, save_png

    plt = pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols + 0.8, 1.3 * n_rows + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                image = row[j]
                ax.imshow(image, cmap=None if image.ndim == 3 else "gray",
                          vmin=0, vmax=255, aspect="auto")
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if i == 0 and column_labels:
                ax.set_title(column_labels[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def _hwc(image: torch.Tensor) -> np.ndarray:
    array = image.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def write_image_grid(path: Path, images: torch.Tensor, row_labels: list[str]) -> Path:
    """images (rows, N, C, H, W) in [0, 1] -> one row of N images per label."""
    rows = [[_hwc(to_pixels(img)) for img in row] for row in images]
    return _grid_png(path, rows, row_labels)


def write_samples_png(path: Path, real, generated: torch.Tensor, labels: torch.Tensor, users: list[int],
                      per_user: int = 4, split: str = "test") -> Path:
    """Per user (a row): `per_user` real spectrograms of `split`, then `per_user` generated ones."""
    index = {u: i for i, u in enumerate(real.users)}
    rows = []
    for user in users:
        label = index[user]
        reals = real.pixels[split][real.labels[split] == label][:per_user]
        fakes = generated[labels == label][:per_user]
        rows.append([_hwc(x) for x in reals] + [_hwc(x) for x in fakes])
    columns = [f"real {i + 1}" for i in range(per_user)] + [f"generated {i + 1}" for i in range(per_user)]
    return _grid_png(path, rows, [f"ID_{u}" for u in users], columns,
                     f"real {split.upper()} (left) vs generated (right)")


def write_cfg_sweep_png(path: Path, scales: list[float], samples: list[torch.Tensor], per_user: int,
                        users: list[int], shown: list[int]) -> Path:
    """One row per CFG scale: the first sample of each shown user (same noise at every scale)."""
    index = {u: i for i, u in enumerate(users)}
    rows = [[_hwc(pixels[index[u] * per_user]) for u in shown] for pixels in samples]
    return _grid_png(path, rows, [f"cfg {s:g}" for s in scales], [f"ID_{u}" for u in shown],
                     "CFG scale sweep (the same starting noise per user)")


def write_gain_per_user_png(path: Path, gains: dict[str, dict[str, dict[str, float]]], low_data_per_user: int,
                            seeds: int) -> Path:
    """Grouped bars: per user, the mean accuracy gain over real only of each augmentation
    ({kind: {user: {"mean", "std"}}}), with the standard deviation over seeds as error bars."""
    from sensorium.report.figures import pyplot, save_png

    plt = pyplot()
    kinds = list(gains)
    users = sorted({u for per_user in gains.values() for u in per_user}, key=int)
    x = np.arange(len(users))
    width = 0.8 / max(len(kinds), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(users) + 1.5), 3.2))
    for k, kind in enumerate(kinds):
        mean = [gains[kind].get(u, {}).get("mean", np.nan) for u in users]
        std = [gains[kind].get(u, {}).get("std", 0.0) for u in users]
        ax.bar(x + (k - (len(kinds) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=kind)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"ID_{u}" for u in users], rotation=60 if len(users) > 10 else 0, fontsize=7)
    ax.set_ylabel("TEST accuracy gain over real only")
    ax.set_title(f"Augmentation gain per user ({low_data_per_user} real recordings per user, mean ± std "
                 f"over {seeds} seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=len(kinds))
    fig.tight_layout()
    return save_png(fig, path)
