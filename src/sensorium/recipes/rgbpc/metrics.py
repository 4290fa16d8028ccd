"""The metrics AlignTask computes on its batches: retrieval during validation (`val/point_top1` picks
best.ckpt) and the held-out evaluation of its test (the action-head test, the depth probe, the
similarity histogram), below the task so that it can import them; evaluate.py runs that test
(`sensorium eval rgbpc`) and describes the protocol.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sensorium.engine.precision import bf16_autocast
from sensorium.eval.retrieval import retrieval_topk
from sensorium.recipes.rgbpc.model import ActionHead, same_patch_mask
from sensorium.report.figures import pyplot, save_png

ACTION_SOURCES = ("pc", "rgb_aligned", "rgb_raw", "student")
"""The feature sources of the action-head test, in the order they are reported."""


# --- retrieval ------------------------------------------------------------------------------------
def retrieval_metrics(points: torch.Tensor, patches: torch.Tensor, frame_id: torch.Tensor, uv: torch.Tensor,
                      patch_px: float) -> dict[str, float]:
    """Retrieval among one batch's N = B x K candidates: points (B, K, D) vs patches (B, K, D)."""
    B, K = points.shape[:2]
    p, v = points.reshape(B * K, -1), patches.reshape(B * K, -1)
    fid, xy = frame_id.repeat_interleave(K), uv.reshape(B * K, 2)
    near = same_patch_mask(fid, xy, fid, xy, patch_px)
    to_patch, to_point = retrieval_topk(p, v), retrieval_topk(v, p)
    to_patch_near = retrieval_topk(p, v, accept=near)
    return {"point_top1": to_patch[1], "point_top5": to_patch[5], "patch_top1": to_point[1],
            "patch_top5": to_point[5], "point_top1_within_patch": to_patch_near[1],
            "point_top5_within_patch": to_patch_near[5], "candidates": float(B * K)}


# --- the action-head probe ------------------------------------------------------------------------
def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    dims = tuple(range(train.ndim - 1))
    mean, std = train.mean(dim=dims), train.std(dim=dims).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_action_head(x: torch.Tensor, task: torch.Tensor, y: torch.Tensor, num_tasks: int, seed: int,
                    steps: int = 400, lr: float = 1e-3, batch_size: int = 64, hidden: int = 64,
                    bf16: bool = False) -> ActionHead:
    """An ActionHead fitted on standardised features x (N, K, F) and scaled actions y (N, A) by AdamW
    on random mini-batches (MSE); with `bf16` its forward passes are autocast to bfloat16 (the
    weights, the loss and the optimiser stay float32)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = ActionHead(x.shape[-1], num_tasks, y.shape[-1], hidden=hidden)
        optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
            with bf16_autocast(x.device.type, enabled=bf16):  # the evaluation runs inside an autocast region
                out = head(x[idx], task[idx])
            loss = F.mse_loss(out.float(), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return head.eval()


def action_head_test(sources: dict[str, tuple[torch.Tensor, torch.Tensor]], train_task: torch.Tensor,
                     train_y: torch.Tensor, test_task: torch.Tensor, test_y: torch.Tensor, num_tasks: int,
                     seeds: int = 3, steps: int = 400, lr: float = 1e-3, bf16: bool = False
                     ) -> dict[str, dict[str, float]]:
    """{source: {error, std, errors, train_error}} for each source's (train features (N, K, F), test
    features (M, K, F)); train_error is the same error on the head's own training steps (a head that
    fits its training steps and fails held-out ones learnt what does not transfer).

    Features are standardised per dimension with the training steps' statistics; actions are centred
    on the training mean and divided by one scale (the norm of the per-component std), so every
    component counts by its size in metres. error = E|pred - y|^2 / E|y - mean(y)|^2 on the held-out
    steps (1 = predicting their mean), mean and std over `seeds` head initialisations (the same seeds
    for every source). `bf16`: the heads train in bfloat16 autocast (`fit_action_head`) and predict
    in float32."""
    mean, scale = train_y.float().mean(dim=0), train_y.float().std(dim=0).norm().clamp_min(1e-8)
    y_train, y_test = (train_y.float() - mean) / scale, (test_y.float() - mean) / scale
    variance = (y_test - y_test.mean(dim=0)).pow(2).sum(dim=1).mean().clamp_min(1e-12)
    train_variance = (y_train - y_train.mean(dim=0)).pow(2).sum(dim=1).mean().clamp_min(1e-12)
    results = {}
    for name, (train_x, test_x) in sources.items():
        x_train, x_test = _standardise(train_x.float(), test_x.float())
        errors, train_errors = [], []
        for seed in range(seeds):
            head = fit_action_head(x_train, train_task, y_train, num_tasks, seed, steps, lr, bf16=bf16)
            with torch.no_grad():
                pred = head(x_test, test_task)
                fitted = head(x_train, train_task)
            errors.append(float((pred - y_test).pow(2).sum(dim=1).mean() / variance))
            train_errors.append(float((fitted - y_train).pow(2).sum(dim=1).mean() / train_variance))
        results[name] = {"error": float(np.mean(errors)), "std": float(np.std(errors)), "errors": errors,
                         "train_error": float(np.mean(train_errors))}
    return results


def gap_closed(raw: float, closer: float, target: float) -> float | None:
    """Share of the gap from `raw` down to `target` that `closer` closes (None when there is no gap)."""
    gap = raw - target
    return (raw - closer) / gap if abs(gap) > 1e-9 else None


def gap_closed_per_head(detail: dict[str, dict], closer: str) -> dict | None:
    """`closer`'s share of the rgb_raw -> pc gap with each head seed (the same seed's head for every
    source, as `action_head_test` fits them), with its mean and spread: how much of a 40% target
    one draw of the head decides. None when a source is missing or a head sees no gap."""
    if not {"pc", "rgb_raw", closer} <= set(detail):
        return None
    per_head = [gap_closed(raw, mine, pc) for raw, mine, pc in
                zip(detail["rgb_raw"]["errors"], detail[closer]["errors"], detail["pc"]["errors"])]
    if any(share is None for share in per_head):
        return None
    return {"per_head": per_head, "mean": float(np.mean(per_head)), "std": float(np.std(per_head))}


def feature_agreement(student: torch.Tensor, teacher: torch.Tensor) -> dict:
    """How a student's per-point features (N, K, D) agree with its teacher's at the same points of N
    frames: the per-point cosine's mean and 5 / 25 / 50 / 75 / 95% quantiles (a mean over mostly
    background points hides the few that matter), the same after removing each frame's mean feature
    (what tells a frame's points apart), and each side's spread within a frame (mean squared distance
    of the unit features to their frame's mean)."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])

    def summary(c: torch.Tensor) -> dict:
        return {"mean": float(c.mean()), "quantiles": dict(zip(["5%", "25%", "50%", "75%", "95%"],
                                                               torch.quantile(c.flatten(), levels).tolist()))}

    s_centred, t_centred = s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    return {"cosine": summary(F.cosine_similarity(s, t, dim=-1)),
            "centred_cosine": summary(F.cosine_similarity(s_centred, t_centred, dim=-1)),
            "within_frame_spread": {"student": float(s_centred.pow(2).sum(-1).mean()),
                                    "teacher": float(t_centred.pow(2).sum(-1).mean())}}


# --- depth probe ----------------------------------------------------------------------------------
def depth_probe(train_x: torch.Tensor, train_depth: torch.Tensor, test_x: torch.Tensor, test_depth: torch.Tensor,
                alpha: float = 1.0) -> dict[str, float]:
    """Ridge regression of per-point camera depth from per-point features, fitted on the training
    points (N, F) and measured on the held-out ones: {r2, rmse}. NaN depths are left out."""
    keep_train, keep_test = torch.isfinite(train_depth), torch.isfinite(test_depth)
    if int(keep_train.sum()) < 2 or int(keep_test.sum()) < 2:
        return {"r2": math.nan, "rmse": math.nan}
    x_train, x_test = _standardise(train_x[keep_train].double(), test_x[keep_test].double())
    y_train, y_test = train_depth[keep_train].double(), test_depth[keep_test].double()
    mean = y_train.mean()
    x1 = torch.cat([x_train, torch.ones(len(x_train), 1, dtype=x_train.dtype)], 1)
    gram = x1.T @ x1 + alpha * torch.eye(x1.shape[1], dtype=x1.dtype)
    w = torch.linalg.solve(gram, x1.T @ (y_train - mean))
    pred = torch.cat([x_test, torch.ones(len(x_test), 1, dtype=x_test.dtype)], 1) @ w + mean
    residual = ((pred - y_test) ** 2).mean()
    return {"r2": float(1 - residual / y_test.var(unbiased=False).clamp_min(1e-12)), "rmse": float(residual.sqrt())}


# --- figures --------------------------------------------------------------------------------------
def similarity_histogram(positives: np.ndarray, negatives: np.ndarray, path: Path, title: str) -> Path:
    """Histograms of positive and negative point-patch cosine similarities (held-out), as a PNG at `path`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(-1, 1, 61)
    ax.hist(negatives, bins=bins, density=True, alpha=0.6, label=f"negatives ({len(negatives)})", color="#c55")
    ax.hist(positives, bins=bins, density=True, alpha=0.6, label=f"positives ({len(positives)})", color="#3a7")
    ax.set_xlabel("cosine similarity, point vs patch (held-out)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_png(fig, path)
