"""Tactile evaluation: frame-4 prediction against copying frame 3, masked reconstruction PSNR,
frozen-feature probes on the indenter class, and a picture grid per sensor.

    sensorium eval tactile --ckpt RUN/checkpoints/best.ckpt [--untrained] [--data.root DIR] [overrides]

runs the task's test pass (TEST windows as queries; TRAIN + VAL windows as the probe bank) and
writes RUN/eval/tactile.json and RUN/eval/grid_<sensor>.png; `--untrained` also evaluates the same
config at initialisation (same seed) into RUN/eval/tactile_untrained.json, the probes' baseline.

What is measured (all on held-out objects):

1. Frame-4 prediction. The model sees frames 1-3 WHOLE (mask ratio 0: the copy predictor sees
   frame 3 whole too) and predicts every patch of frame 4. Its squared error over all pixels of
   frame 4 is divided by that of the trivial predictor "copy frame 3", both in the loss's target
   space (per-patch normalised patches under norm_pix) -> `pred_mse_ratio`; and in [0, 1] pixels
   -> `pixel_pred_mse_ratio`, where a norm_pix prediction is mapped back with frame 3's own patch
   mean and std (inputs only: nothing of frame 4 is used). The same at the training mask ratio
   (frames 1-3 masked, as trained) is reported too. Below 1 means the motion was learned.
2. Reconstruction of the static frame at the training mask ratio: PSNR in [0, 1] pixels over the
   masked patches (`psnr_masked`). Under norm_pix the prediction is mapped back to pixels with
   the target patch's own mean and std, as MAE's figures do, so the PSNR scores structure inside
   patches; `psnr_masked_flat` is the same for a flat patch at that true mean (the reference).
3. Frozen encoder features of the static frame (no masking; mean of the patch tokens, or CLS),
   standardised per dimension with statistics fitted on the bank (per sensor by default,
   `evaluation.standardize`): weighted k-NN and a linear probe on the indenter class
   (`sensorium.eval.probes`); `knn_protocols` holds the k-NN under every pooling and
   standardisation, so the chosen protocol can be read against the others.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sensorium.layers.patch_embed import unpatchify
from sensorium.losses.masked import normalize_patches
from sensorium.models.mae import DynamicOutput, TactileMAE

EPS = 1e-6  # mae_loss's default: the same per-patch normalisation as the training target


# --- target spaces ----------------------------------------------------------------------------------
def target_space(patches: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Patches (..., L, P) -> the loss's target space (per-patch standardised under norm_pix)."""
    return normalize_patches(patches.float(), EPS) if norm_pix else patches.float()


def predict_future(out: DynamicOutput, norm_pix: bool) -> torch.Tensor:
    """The model's frame-T prediction in the loss's target space, (B, L, P). With a residual model
    the decoder's output is a change added to frame T-1 in that space, so a zero change is exactly
    the "copy frame T-1" predictor."""
    if out.future_base is None:
        return out.future_pred.float()
    return target_space(out.future_base, norm_pix) + out.future_pred.float()


def from_target_space(pred: torch.Tensor, reference: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Undo `target_space` for `pred` with the per-patch mean and std of `reference` (..., L, P)."""
    if not norm_pix:
        return pred.float()
    reference = reference.float()
    mean, var = reference.mean(-1, keepdim=True), reference.var(-1, keepdim=True)
    return pred.float() * (var + EPS).sqrt() + mean


# --- one batch ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_batch(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor, norm_pix: bool,
                   to_pixels: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None,
                   features: bool = True) -> dict[str, torch.Tensor]:
    """Per-sample sums for one batch of normalised windows `frames` (B, 4, 3, S, S).

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
        pred = predict_future(out, norm_pix)
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
    recon = to_pixels(from_target_space(static.pred, static.target, norm_pix)).clamp(0, 1)
    flat = to_pixels(from_target_space(torch.zeros_like(static.pred), static.target, norm_pix)).clamp(0, 1)
    stats["se_recon"] = sse(recon * mask, truth * mask)
    stats["se_recon_flat"] = sse(flat * mask, truth * mask)
    stats["n_recon"] = static.mask.sum(1) * static.pred.shape[-1]
    stats["n_future"] = torch.full((B,), float(L * static.pred.shape[-1]), device=frames.device)
    if features:
        stats.update(encode(net, frames, sensor))
    return stats


@torch.no_grad()
def encode(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Frozen features of the static frame with both poolings: (B, D) each."""
    static_frame = frames[:, -1]
    return {"feature_mean": net.encode_features(static_frame, sensor, "mean").float(),
            "feature_cls": net.encode_features(static_frame, sensor, "cls").float()}


def summarize(queries: dict[str, torch.Tensor]) -> dict[str, float]:
    """Dataset-level numbers from the concatenated per-sample sums of `evaluate_batch`."""
    def total(key: str) -> float:
        return float(queries[key].double().sum())

    n_future, n_recon = total("n_future"), total("n_recon")
    out = {"num_samples": int(len(queries["se_pred"]))}
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


def psnr(mse: float, peak: float = 1.0) -> float:
    return float(10.0 * np.log10(peak**2 / max(mse, 1e-12)))


# --- pictures -------------------------------------------------------------------------------------------
@torch.no_grad()
def grid_images(net: TactileMAE, frames: torch.Tensor, sensor: torch.Tensor, norm_pix: bool,
                to_pixels: Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Columns of the picture grid for a few windows, each (B, 3, S, S) in [0, 1]: frame 3, frame 4
    (the static task's frame t), frame 4 masked, its reconstruction (masked patches predicted,
    visible ones pasted back, as in MAE's figures) and frame 4 predicted from whole frames 1-3."""
    B, L, p = frames.shape[0], net.num_patches, net.patch_size
    grid = net.grid
    noise = torch.rand(B, L, generator=generator).to(frames.device)
    static = net.forward_static(frames[:, -1], sensor, noise=noise)
    mask = static.mask[..., None]  # (B, L, 1)
    truth = to_pixels(static.target)
    recon = to_pixels(from_target_space(static.pred, static.target, norm_pix)).clamp(0, 1)
    dynamic = net.forward_dynamic(frames, sensor, mask_ratio=0.0)
    last = dynamic.recon_target[:, -L:]
    future = to_pixels(from_target_space(predict_future(dynamic, norm_pix), last, norm_pix)).clamp(0, 1)
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


# --- CLI ----------------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from sensorium.engine.demo import test_untrained
    from sensorium.eval.checkpoint import eval_parser, test_checkpoint

    parser = eval_parser("sensorium eval tactile", __doc__)
    parser.add_argument("--untrained", action="store_true",
                        help="also evaluate the same config at initialisation -> eval/tactile_untrained.json")
    args, overrides = parser.parse_known_args(argv)
    cli = test_checkpoint(args.ckpt, args.config, overrides)
    eval_dir = cli.run_dir / "eval"
    print(f"[eval] wrote {eval_dir / 'tactile.json'}")
    if args.untrained:
        with tempfile.TemporaryDirectory() as tmp:
            test_untrained(cli, Path(tmp))
            shutil.copyfile(Path(tmp) / "eval" / "tactile.json", eval_dir / "tactile_untrained.json")
        print(f"[eval] wrote {eval_dir / 'tactile_untrained.json'}")
    return 0
