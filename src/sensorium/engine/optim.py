"""AdamW with decay only on weight matrices, and a per-step linear-warmup + cosine schedule.

The learning-rate rule follows MAE: when `base_lr` is given,
    lr = base_lr * batch_size * accumulate_grad_batches * world_size / 256
so a YAML written for one GPU keeps its meaning on many.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OptimConfig:
    """Optimiser and schedule of a task (the `model.optim` block in YAML)."""

    lr: float = 1e-3
    """Absolute peak learning rate; ignored when `base_lr` is set."""
    base_lr: float | None = None
    """Peak lr per 256 samples of effective batch (MAE rule); the resolved lr is printed and logged."""
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    """Linear warmup length in epochs (converted to optimiser steps)."""
    min_lr: float = 1e-6
    """Floor of the cosine decay."""


def resolve_lr(config: OptimConfig, batch_size: int, accumulate: int, world_size: int) -> float:
    if config.base_lr is None:
        return config.lr
    return config.base_lr * batch_size * accumulate * world_size / 256


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decay for weight matrices and kernels; none for 1-D parameters (biases, norm
    gains: decaying them only pulls them towards 0) nor for the learned tokens a module lists in
    `no_weight_decay()` (the timm/MAE convention for cls/mask/fusion tokens)."""
    skip: set[str] = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay"):
            skip |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, peak_lr: float, min_lr: float) -> float:
    """Learning rate at optimiser step `step` (0-based): linear from ~0 to peak over the warmup,
    then cosine from peak to min_lr at `total_steps`."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(module: nn.Module, config: OptimConfig, peak_lr: float, total_steps: int,
                    steps_per_epoch: float, time_fraction: Callable[[], float] | None = None,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + a LambdaLR stepped once per optimiser step.

    time_fraction: the share of a time budget used so far (e.g. of the Trainer's max_time). With
    it, the cosine runs to whichever ends first, `total_steps` or the budget: the decay's progress
    is the larger of the two fractions. A fit stopped by max_time then still ends at min_lr, as
    a schedule sized for a faster machine would not."""
    optimizer = torch.optim.AdamW(param_groups(module, config.weight_decay), lr=peak_lr, betas=config.betas)
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch)) if config.warmup_epochs > 0 else 0
    warmup_steps = min(warmup_steps, max(0, total_steps - 1))

    min_lr = min(config.min_lr, peak_lr)  # a tiny peak lr must not make the "decay" climb to min_lr

    def factor(step: int) -> float:
        if time_fraction is not None and step >= warmup_steps:
            # The step at which the cosine would stand where the clock says it should.
            by_time = warmup_steps + time_fraction() * (total_steps - warmup_steps)
            step = max(step, min(total_steps, math.ceil(by_time)))
        return warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr) / peak_lr

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
