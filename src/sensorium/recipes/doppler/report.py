"""Doppler sections of the report and the evaluation's figures.

A VAE run shows its reconstructions (eval/vae_reconstructions.png); a DiT run shows the evaluation
table (eval/doppler.json: fidelity, augmentation gains, CAS, Fréchet distances against their floor
and the untrained generator, physical fidelity), the real-vs-generated grid and the CFG sweep. The
training curves of both come from the shared report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sensorium.report.html import Section


# --- figures --------------------------------------------------------------------------------------------
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
    rows = [[_hwc((img * 255).round().to(torch.uint8)) for img in row] for row in images]
    return _grid_png(path, rows, row_labels)


def write_samples_png(path: Path, real, generated: torch.Tensor, labels: torch.Tensor, users: list[int],
                      per_user: int = 4) -> Path:
    """Per user (a row): `per_user` real VAL spectrograms, then `per_user` generated ones."""
    index = {u: i for i, u in enumerate(real.users)}
    rows = []
    for user in users:
        label = index[user]
        reals = real.pixels["val"][real.labels["val"] == label][:per_user]
        fakes = generated[labels == label][:per_user]
        rows.append([_hwc(x) for x in reals] + [_hwc(x) for x in fakes])
    columns = [f"real {i + 1}" for i in range(per_user)] + [f"generated {i + 1}" for i in range(per_user)]
    return _grid_png(path, rows, [f"ID_{u}" for u in users], columns, "real (left) vs generated (right)")


def write_cfg_sweep_png(path: Path, scales: list[float], samples: list[torch.Tensor], per_user: int,
                        users: list[int], shown: list[int]) -> Path:
    """One row per CFG scale: the first sample of each shown user (same noise at every scale)."""
    index = {u: i for i, u in enumerate(users)}
    rows = [[_hwc(pixels[index[u] * per_user]) for u in shown] for pixels in samples]
    return _grid_png(path, rows, [f"cfg {s:g}" for s in scales], [f"ID_{u}" for u in shown],
                     "CFG scale sweep (the same starting noise per user)")


# --- report sections ------------------------------------------------------------------------------------
def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def sections(run_dir: Path) -> list[Section]:
    eval_dir = run_dir / "eval"
    out: list[Section] = []
    recon = eval_dir / "vae_reconstructions.png"
    if recon.is_file():
        out.append(Section("VAE reconstructions (val)").image(recon.read_bytes(), alt="reconstructions"))
    result = _read(eval_dir / "doppler.json")
    export = _read(run_dir / "export" / "config.json") or {}
    if result is None:
        if export.get("stage") == "dit":
            out.append(Section("Generation").text(
                f"no eval/doppler.json yet: run `sensorium eval doppler --ckpt "
                f"{run_dir}/checkpoints/last.ckpt --data PREPARED_DIR`", muted=True))
        return out

    base = result.get("baseline") or {}
    table = Section(f"Generation: {len(result['users'])} users (chance {result['chance']:.3f})")
    rows = [["conditioning fidelity (real-data classifier on generated)", result["cond_fidelity"],
             base.get("cond_fidelity")],
            ["the classifier on real val (ceiling of fidelity)", result["classifier"]["real_val_accuracy"],
             None],
            ["the classifier on VAE reconstructions of val (ceiling through this VAE)",
             result["vae_reconstruction"]["accuracy"], None],
            ["the same, judged by a classifier trained without blur",
             result["sharp_classifier"]["cond_fidelity"],
             None],
            ["CAS (trained on generated, tested on real val)", result["cas"], None],
            ["Fréchet distance (classifier features)", result["fd"], base.get("fd")],
            ["Fréchet distance, real vs real (floor)", result["fd_floor"], base.get("fd_floor")]]
    table.table(["metric", "trained generator", "untrained generator"],
                [[r[0], _fmt(r[1]), _fmt(r[2])] for r in rows])
    table.text(f"FD on {result['fd_samples']} samples per side; VAE reconstruction PSNR "
               f"{result['vae_reconstruction']['psnr']:.2f} dB; sampling {result['sampling']}", muted=True)
    out.append(table)

    aug = result["aug"]
    gains = Section(f"Augmentation gain ({aug['low_data_per_user']} real recordings per user, "
                    f"{len(aug['seeds'])} seeds)")
    def per_seed(name: str) -> str:
        return ", ".join(f"{v:.3f}" for v in aug["accuracy"][name])

    def gain(name: str) -> str:
        return "" if name == "real" else f"{aug['gain'][name]['mean']:+.3f} ± {aug['gain'][name]['std']:.3f}"

    gains.table(["training data", "val accuracy (mean)", "per seed", "gain over real only"],
                [[name, _fmt(aug["accuracy_mean"][name]), per_seed(name), gain(name)]
                 for name in ("real", "classic", "generated", "both")])
    out.append(gains)

    per_user = Section("Per user")
    header = ["user", "fidelity", "CAS", "FD", "FD floor"]
    rows = []
    for user in result["users"]:
        u = str(user)
        fd = result["fd_per_user"].get(u, {})
        rows.append([f"ID_{user}", _fmt(result["cond_fidelity_per_user"].get(u)),
                     _fmt(result["cas_per_user"].get(u)), _fmt(fd.get("fd")), _fmt(fd.get("fd_floor"))])
    per_user.table(header, rows)
    out.append(per_user)

    physical = result.get("physical")
    if physical:
        section = Section("Physical fidelity (synthetic data: measured from spectrograms vs users.csv)")
        section.table(["quantity", "real val: MAE", "real val: corr", "generated: MAE", "generated: corr"],
                      [["torso Doppler (Hz)", _fmt(physical["real_torso_mae_hz"]),
                        _fmt(physical["real_torso_corr"]),
                        _fmt(physical["generated_torso_mae_hz"]), _fmt(physical["generated_torso_corr"])],
                       ["gait-cycle frequency (Hz)", _fmt(physical["real_cycle_mae_hz"]),
                        _fmt(physical["real_cycle_corr"]), _fmt(physical["generated_cycle_mae_hz"]),
                        _fmt(physical["generated_cycle_corr"])]])
        out.append(section)

    sweep = Section("CFG scale sweep")
    sweep.table(["cfg scale", "fidelity", "FD", "FD floor"],
                [[s["cfg_scale"], _fmt(s["cond_fidelity"]), _fmt(s["fd"]), _fmt(s["fd_floor"])]
                 for s in result["cfg_sweep"]])
    for name in ("cfg_sweep.png", "samples_grid.png"):
        if (eval_dir / name).is_file():
            sweep.image((eval_dir / name).read_bytes(), alt=name)
    out.append(sweep)
    return out
