"""AdamW with decay only on weight matrices, and a per-step linear-warmup + cosine schedule.

The learning-rate rule follows MAE: when `base_lr` is given,
    lr = base_lr * batch_size * accumulate_grad_batches * world_size / 256
so a YAML written for one GPU keeps its meaning on many.

Staged unfreezing (`OptimConfig.unfreeze`): named parts of the task stay frozen until an epoch,
then train at the schedule's lr times their own multiplier. Their parameter groups exist from the
first step (so the optimiser and its checkpoints keep one shape); `set_unfrozen`, called by the
task at each epoch start, flips `requires_grad`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sensorium.config import as_config
from sensorium.errors import ConfigError
from sensorium.models.encoders import PretrainedEncoder


@dataclass
class UnfreezeStage:
    """Parts of the task that start training at `epoch`, at their own lr: the staged fine-tuning
    of pretrained encoders (train the fusion first, then the encoders' last layers, then more)."""

    epoch: int
    """Epoch (0-based) at whose start they begin training; before it they are frozen."""
    modules: list[str]
    """Dotted paths in the task (`net.encoders.video`, `net.encoders.images.backbone.encoder.layer.11`):
    every parameter whose name is a path or starts with `path.`. A parameter that several stages
    name follows the longest (most specific) path, so a later stage can name a whole encoder after
    an earlier one named its last layers."""
    lr_mult: float = 1.0
    """Their lr is the schedule's lr at each step times this (0.1 or less for a pretrained backbone)."""

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise ConfigError("optim.unfreeze.epoch", f"must be 0 or more, got {self.epoch}")
        if not self.modules:
            raise ConfigError("optim.unfreeze.modules", "names no module")
        if not self.lr_mult > 0:
            raise ConfigError("optim.unfreeze.lr_mult", f"must be positive, got {self.lr_mult}")


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
    unfreeze: list[UnfreezeStage] = field(default_factory=list)
    """Staged unfreezing: each stage's modules are frozen until its epoch, then train at lr x its
    `lr_mult` (see `UnfreezeStage`). Under DDP it needs `--trainer.strategy
    ddp_find_unused_parameters_true`: the stages' parameters get no gradient while frozen."""

    def __post_init__(self) -> None:
        self.unfreeze = [as_config(UnfreezeStage, stage) for stage in self.unfreeze]  # dicts from YAML/checkpoints


def resolve_lr(config: OptimConfig, batch_size: int, accumulate: int, world_size: int) -> float:
    if config.base_lr is None:
        return config.lr
    return config.base_lr * batch_size * accumulate * world_size / 256


def param_groups(module: nn.Module, weight_decay: float, stages: list[UnfreezeStage] = ()) -> list[dict]:
    """Two groups: decay for weight matrices and kernels; none for 1-D parameters (biases, norm
    gains: decaying them only pulls them towards 0) nor for the learned tokens a module lists in
    `no_weight_decay()` (the timm/MAE convention for cls/mask/fusion tokens). Frozen parameters are
    left out, except those of unfreeze `stages`: two more groups per stage (decay, no decay; empty
    ones dropped) holding them whether frozen now or not, each with the stage's `lr_mult`."""
    skip: set[str] = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay"):
            skip |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    staged = stage_of_parameters(module, stages)
    decay, no_decay = [[] for _ in range(len(stages) + 1)], [[] for _ in range(len(stages) + 1)]
    for name, param in module.named_parameters():
        group = staged.get(name, -1) + 1  # 0: the main groups
        if group == 0 and not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay)[group].append(param)
    groups = [
        {"params": decay[0], "weight_decay": weight_decay},
        {"params": no_decay[0], "weight_decay": 0.0},
    ]
    for i, stage in enumerate(stages, start=1):
        groups += [{"params": params, "weight_decay": wd, "lr_mult": stage.lr_mult}
                   for params, wd in ((decay[i], weight_decay), (no_decay[i], 0.0)) if params]
    return groups


def stage_of_parameters(module: nn.Module, stages: list[UnfreezeStage]) -> dict[str, int]:
    """{parameter name: index of the stage that unfreezes it} for the parameters `stages` name
    (the longest matching path wins). A path that names no parameter is a ConfigError."""
    names = [name for name, _ in module.named_parameters()]
    best: dict[str, tuple[int, int]] = {}  # name -> (path length, stage)
    for i, stage in enumerate(stages):
        for path in stage.modules:
            matched = [n for n in names if n == path or n.startswith(path + ".")]
            if not matched:
                raise ConfigError("optim.unfreeze.modules", f"{path!r} names no parameter of {type(module).__name__} "
                                                            f"(its parameters start with: "
                                                            f"{sorted({n.split('.')[0] for n in names})})")
            for n in matched:
                if len(path) > best.get(n, (-1, -1))[0]:
                    best[n] = (len(path), i)
    return {name: stage for name, (_, stage) in best.items()}


def set_unfrozen(module: nn.Module, stages: list[UnfreezeStage], epoch: int | None) -> list[int]:
    """Make each stage's parameters trainable when `epoch` >= its epoch and frozen before it
    (`epoch` None: every stage trainable). Returns the indices of the stages whose state changed.

    A `PretrainedEncoder` built with `freeze` runs its backbone without autograd and in eval mode;
    once any parameter inside it trains, its `freeze` is cleared so that gradients reach them and
    dropout follows train/eval mode again (it is not set back: stages only unfreeze)."""
    staged = stage_of_parameters(module, stages)
    params = dict(module.named_parameters())
    changed = set()
    for name, i in staged.items():
        trainable = epoch is None or epoch >= stages[i].epoch
        if params[name].requires_grad != trainable:
            params[name].requires_grad_(trainable)
            changed.add(i)
    for prefix, sub in module.named_modules():
        if isinstance(sub, PretrainedEncoder) and sub.freeze and any(
                params[n].requires_grad for n in staged if not prefix or n.startswith(prefix + ".")):
            sub.freeze = False
            sub.train(sub.training)  # the backbone follows the wrapper's mode from now on
    return sorted(changed)


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
    groups = param_groups(module, config.weight_decay, config.unfreeze)
    for group in groups:  # LambdaLR scales each group's own lr, so a stage keeps its multiplier throughout
        group["lr"] = peak_lr * group.get("lr_mult", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=config.betas)
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
