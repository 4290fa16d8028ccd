"""What the tactile task measures in validation and test, below the task so that validation can
pick checkpoints by it (`val/pred_mse_ratio`): per-batch sums of the frame-4 prediction and
copy-frame-3 errors, masked reconstruction error and frozen features (`evaluate_batch`, `encode`),
their dataset-level summary (`summarize`), the frozen-feature probes of force, contact centre and
slip (`contact_probes`), and the test pass's picture grid per sensor (`grid_images`, `save_grid`).
What each number means: `sensorium.recipes.tactile.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sensorium.layers.patch_embed import unpatchify
from sensorium.recipes.tactile.model import (
    EPS,
    StaticOutput,
    TactileMAE,
    from_contact_space,
    static_norm_pix_or,
    target_space,
)


# --- target spaces ----------------------------------------------------------------------------------
def from_target_space(pred: torch.Tensor, reference: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Undo `target_space` for `pred` with the per-patch mean and std of `reference` (..., L, P)."""
    if not norm_pix:
        return pred.float()
    reference = reference.float()
    mean, var = reference.mean(-1, keepdim=True), reference.var(-1, keepdim=True)
    return pred.float() * (var + EPS).sqrt() + mean


def static_reconstruction(static: StaticOutput, norm_pix: bool, reference: torch.Tensor | None = None,
                          zero: bool = False) -> torch.Tensor:
    """The static task's frame t (B, L, P) in input space from its prediction (`zero`: from a zero
    prediction, the flat baseline): per-patch statistics undone under norm_pix, or, given the
    reference frames' patches, the reference plus the predicted contact."""
    if reference is not None:
        pred = torch.zeros_like(static.target, dtype=torch.float32) if zero else static.contact_pred
        return from_contact_space(pred, static.target, reference)
    pred = torch.zeros_like(static.pred) if zero else static.pred
    return from_target_space(pred, static.target, norm_pix)


# --- one batch ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_batch(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor, norm_pix: bool,
                   to_pixels: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None,
                   features: bool = True, reference: torch.Tensor | None = None,
                   static_norm_pix: bool | None = None,
                   static_reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample sums for one batch of normalised windows `frames` (B, 4, 3, S, S); the static
    reconstruction is read in its own target space (`static_norm_pix`, default: `norm_pix`), or,
    given `static_reference` (patches (B, L, P) of the windows' reference frames), as the
    reference plus the predicted contact (`model.contact_space`).

    `to_pixels` maps patches of the normalised input (..., L, P) to [0, 1] pixels (the inverse
    of the input normalisation). Masks are drawn from `generator` (fixed masks for a fixed seed).
    Returns (B,)-shaped sums of squared errors (`se_*`) and counts, plus features (B, D).
    """
    B, L = frames.shape[0], net.num_patches
    noise = torch.rand(B, L, generator=generator).to(frames.device)  # static mask, and tube mask of frames 1-3
    context_noise = noise if net.tube_mask else torch.rand(B, 3 * L, generator=generator).to(frames.device)
    stats: dict[str, torch.Tensor] = {}

    def sse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B, L, P) -> (B,)
        return (a.float() - b.float()).pow(2).flatten(1).sum(1)

    # 1. frame-4 prediction from whole context frames, then from masked ones as trained.
    for tag, ratio in (("", 0.0), ("_masked", None)):
        out = net.forward_dynamic(frames, sensor, noise=context_noise, mask_ratio=ratio)
        last = out.recon_target[:, -L:]  # (B, L, P) frame 3, the copy predictor
        target = target_space(out.future_target, norm_pix)
        pred = out.predict_future(norm_pix)
        stats[f"se_pred{tag}"] = sse(pred, target)
        stats[f"se_copy{tag}"] = sse(target_space(last, norm_pix), target)
        if tag == "":
            pixel_pred = to_pixels(from_target_space(pred, last, norm_pix)).clamp(0, 1)
            stats["se_pixel_pred"] = sse(pixel_pred, to_pixels(out.future_target))
            stats["se_pixel_copy"] = sse(to_pixels(last), to_pixels(out.future_target))

    # 2. static reconstruction at the training mask ratio, scored on masked patches in pixels.
    static = net.forward_static(frames[:, -1], sensor, noise=noise)
    mask = static.mask[..., None]  # (B, L, 1)
    truth = to_pixels(static.target)
    recon = to_pixels(static_reconstruction(static, static_norm_pix_or(norm_pix, static_norm_pix),
                                            static_reference)).clamp(0, 1)
    flat = to_pixels(static_reconstruction(static, static_norm_pix_or(norm_pix, static_norm_pix),
                                           static_reference, zero=True)).clamp(0, 1)
    stats["se_recon"] = sse(recon * mask, truth * mask)
    stats["se_recon_flat"] = sse(flat * mask, truth * mask)
    stats["n_recon"] = static.mask.sum(1) * static.pred.shape[-1]
    stats["n_future"] = torch.full((B,), float(L * static.pred.shape[-1]), device=frames.device)
    if features:
        stats.update(encode(net, frames, sensor, reference))
    return stats


@torch.no_grad()
def encode(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor,
           reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Frozen features of the static frame with both poolings: (B, D) each; with the windows'
    normalised reference frames (B, 3, S, S) also each pooling minus the reference frame's
    (`feature_<pool>_ref`: the recording's own gel, lighting and markers taken out)."""
    tokens = net.encode_tokens(frames[:, -1], sensor)  # one encoder pass gives both poolings
    out = {f"feature_{pool}": net.pool_tokens(tokens, pool).float() for pool in ("mean", "cls")}
    if reference is not None:
        tokens = net.encode_tokens(reference, sensor)
        for pool in ("mean", "cls"):
            out[f"feature_{pool}_ref"] = out[f"feature_{pool}"] - net.pool_tokens(tokens, pool).float()
    return out


def summarize(queries: dict[str, torch.Tensor]) -> dict[str, float]:
    """Dataset-level numbers from the concatenated per-sample sums of `evaluate_batch`."""
    def total(key: str) -> float:
        return float(queries[key].double().sum())

    n_future, n_recon = total("n_future"), total("n_recon")
    out = {"num_samples": len(queries["se_pred"])}
    for tag in ("", "_masked"):
        out[f"pred_mse{tag}"] = total(f"se_pred{tag}") / n_future
        out[f"copy_mse{tag}"] = total(f"se_copy{tag}") / n_future
        out[f"pred_mse_ratio{tag}"] = total(f"se_pred{tag}") / max(total(f"se_copy{tag}"), 1e-12)
    out["pixel_pred_mse"] = total("se_pixel_pred") / n_future
    out["pixel_copy_mse"] = total("se_pixel_copy") / n_future
    out["pixel_pred_mse_ratio"] = total("se_pixel_pred") / max(total("se_pixel_copy"), 1e-12)
    out["psnr_masked"] = psnr(total("se_recon") / max(n_recon, 1.0))
    out["psnr_masked_flat"] = psnr(total("se_recon_flat") / max(n_recon, 1.0))
    return out


def ratio_by_motion(queries: dict[str, torch.Tensor]) -> dict[str, float]:
    """The frame-4 ratio of sliding and of pressed-in-place contacts apart, from the windows' `slip`
    frame labels (1 / 0; -1 unknown): {pred_mse_ratio_sliding, num_samples_sliding, ..._static};
    empty without frame labels."""
    out: dict[str, float] = {}
    if "slip" not in queries:
        return out
    for name, flag in (("sliding", 1), ("static", 0)):
        chosen = queries["slip"] == flag
        if chosen.any():
            part = summarize({key: value[chosen] for key, value in queries.items() if key.startswith(("se_", "n_"))})
            out[f"pred_mse_ratio_{name}"] = part["pred_mse_ratio"]
            out[f"num_samples_{name}"] = part["num_samples"]
    return out


def psnr(mse: float, peak: float = 1.0) -> float:
    return float(10.0 * np.log10(peak**2 / max(mse, 1e-12)))


# --- frozen-feature probes of the contact (TacBench / AnyTouch style) -------------------------------------
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)
"""Ridge strengths tried for the force and contact-centre probes; val chooses."""
LOGISTIC_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths tried for the slip probe; val chooses."""


def contact_error_mm(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean Euclidean distance between predicted and true contact centres (N, 2), in their unit (mm)."""
    return float(np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(truth, np.float64), axis=1).mean())


def _rows(split: dict[str, np.ndarray], target: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, target) of the rows of `split` whose `target` is known (finite; slip >= 0)."""
    y = split[target]
    known = (y >= 0) if target == "slip" else np.isfinite(y).reshape(len(y), -1).all(1)
    return split["x"][known], y[known]


def _ridge_on_val(train: tuple, val: tuple, error) -> tuple[object, float, dict[float, float]]:
    """Ridge regressions fitted on train for every RIDGE_ALPHAS; the one with the lowest `error`
    on val is refitted on train + val. Returns (model, alpha, {alpha: val error})."""
    from sklearn.linear_model import Ridge

    scores = {alpha: error(Ridge(alpha=alpha).fit(*train).predict(val[0]), val[1]) for alpha in RIDGE_ALPHAS}
    alpha = min(scores, key=lambda a: (scores[a], -a))  # a tie goes to the stronger regularisation
    model = Ridge(alpha=alpha).fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    return model, alpha, scores


def _missing(train: tuple, val: tuple, test: tuple, classes: bool = False) -> str | None:
    """Why a probe cannot run on these rows, or None."""
    sizes = {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])}
    short = [f"{name} {n}" for name, n in sizes.items() if n < (1 if name == "val" else 2)]
    if short:
        return f"too few labelled windows ({', '.join(short)})"
    if classes and len(np.unique(train[1])) < 2:
        return "the train windows hold one slip class only"
    return None


def contact_probes(train: dict[str, np.ndarray], val: dict[str, np.ndarray],
                   test: dict[str, np.ndarray]) -> dict:
    """Linear probes of frozen features for the frame labels: each split a dict of `x` (N, D)
    features, `force` (N,) newtons, `contact_mm` (N, 2), `slip` (N,) with NaN / -1 where unknown.

    Fitted on train; val chooses the regularisation (RIDGE_ALPHAS, LOGISTIC_CS), the chosen probe is
    refitted on train + val and scored on test, never chosen on it (scikit-learn: Ridge, r2_score,
    mean_squared_error, LogisticRegression with balanced class weights, f1_score):

    - force: ridge regression; R^2 and RMSE (N) over the test windows with a known force;
    - contact centre: ridge regression of (x, y); mean Euclidean error (mm) over the test windows
      in contact;
    - slip: logistic regression, sliding (1) against static (0) contact; F1 of the sliding class.

    Beside each, the trivial predictor's score on the same test rows (`*_constant`: the train + val
    mean force / centre, "always sliding"). A probe without enough labelled rows is left out and
    named in `skipped`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, mean_squared_error, r2_score

    out: dict = {"skipped": {}, "sizes": {}}
    for target in ("force", "contact_mm", "slip"):
        rows = [_rows(split, target) for split in (train, val, test)]
        why = _missing(*rows, classes=target == "slip")
        out["sizes"][target] = [len(r[1]) for r in rows]
        if why:
            out["skipped"][target] = why
            continue
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = rows
        fitted_y = np.concatenate([y_train, y_val])
        if target == "force":
            model, alpha, _ = _ridge_on_val(rows[0], rows[1], lambda p, t: mean_squared_error(t, p))
            pred, constant = model.predict(x_test), np.full(len(y_test), fitted_y.mean())
            out |= {"force_r2": float(r2_score(y_test, pred)),
                    "force_rmse": float(np.sqrt(mean_squared_error(y_test, pred))),
                    "force_r2_constant": float(r2_score(y_test, constant)),
                    "force_rmse_constant": float(np.sqrt(mean_squared_error(y_test, constant))),
                    "force_alpha": alpha}
        elif target == "contact_mm":
            model, alpha, _ = _ridge_on_val(rows[0], rows[1], contact_error_mm)
            constant = np.broadcast_to(fitted_y.mean(0), y_test.shape)
            out |= {"contact_mm": contact_error_mm(model.predict(x_test), y_test),
                    "contact_mm_constant": contact_error_mm(constant, y_test), "contact_alpha": alpha}
        else:
            def probe(c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
                return LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x, y)

            scores = {c: f1_score(y_val, probe(c, x_train, y_train).predict(x_val), zero_division=0.0)
                      for c in LOGISTIC_CS}
            c = max(scores, key=lambda k: (scores[k], -k))  # a tie goes to the stronger regularisation
            pred = probe(c, np.concatenate([x_train, x_val]), fitted_y).predict(x_test)
            out |= {"slip_f1": float(f1_score(y_test, pred, zero_division=0.0)),
                    "slip_f1_constant": float(f1_score(y_test, np.ones_like(y_test), zero_division=0.0)),
                    "slip_c": c, "slip_share_test": float(y_test.mean())}
    return out


# --- pictures -------------------------------------------------------------------------------------------
@torch.no_grad()
def grid_images(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor, norm_pix: bool,
                to_pixels: Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator | None = None, static_norm_pix: bool | None = None,
                static_reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Columns of the picture grid for a few windows, each (B, 3, S, S) in [0, 1]: frame 3, frame 4
    (the static task's frame t), frame 4 masked, its reconstruction (masked patches predicted,
    visible ones pasted back, as in MAE's figures) and frame 4 predicted from whole frames 1-3."""
    B, L, p = frames.shape[0], net.num_patches, net.patch_size
    grid = net.grid
    noise = torch.rand(B, L, generator=generator).to(frames.device)
    static = net.forward_static(frames[:, -1], sensor, noise=noise)
    mask = static.mask[..., None]  # (B, L, 1)
    truth = to_pixels(static.target)
    recon = to_pixels(static_reconstruction(static, static_norm_pix_or(norm_pix, static_norm_pix),
                                            static_reference)).clamp(0, 1)
    dynamic = net.forward_dynamic(frames, sensor, mask_ratio=0.0)
    last = dynamic.recon_target[:, -L:]
    future = to_pixels(from_target_space(dynamic.predict_future(norm_pix), last, norm_pix)).clamp(0, 1)
    columns = {"frame 3": to_pixels(last), "frame 4": truth, "masked frame 4": truth * (1 - mask) + 0.5 * mask,
               "reconstruction": truth * (1 - mask) + recon * mask, "predicted frame 4": future}
    return {name: unpatchify(patches.float(), p, grid).clamp(0, 1).cpu() for name, patches in columns.items()}


def save_grid(columns: dict[str, torch.Tensor], path: str | Path, title: str = "") -> Path:
    """One row per window, one column per entry of `columns` (B, 3, S, S)."""
    from sensorium.report.figures import pyplot, save_png

    plt = pyplot()
    names = list(columns)
    rows = next(iter(columns.values())).shape[0]
    fig, axes = plt.subplots(rows, len(names), figsize=(1.6 * len(names), 1.6 * rows + 0.4), squeeze=False)
    for j, name in enumerate(names):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(columns[name][i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
