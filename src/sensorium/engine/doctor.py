"""The doctor: turns the silent failures recorded in the seeds into clear messages.

Checks (each a pure function below, used by the `Doctor` callback during training and by
`sensorium doctor` on a few batches without training):

- classes and positive pairs per batch (contrastive recipes): a batch with a single class or no
  positive pair is an error naming the sampler and the label counts (the welding note's sampler
  returned single-class batches and the SupCon loss sat at log(B-1) for days);
- parameter counts (total / trainable / frozen) at start; trainable parameters that receive no
  gradient in the first backward: an error naming them;
- non-finite loss or gradients: the optimiser step is skipped and counted; after
  `max_nonfinite_in_row` in a row the run stops with a message;
- a loss that has not moved after `stall_steps` steps: a warning with the current lr and likely causes;
- each term's weighted share of a multi-term loss, logged; a warning when a term is under
  `share_low` or over `share_high` of the total (the cardiac note's IoU stayed at 0 with one term
  under 1%);
- overlap between train / val / test samples by sample id and by content hash: an error;
- on CPU, more torch threads than cores left free by other running processes: a warning (OpenMP
  threads spin-waiting for busy cores made a cardiac demo step 20x slower: 0.35 s at one thread,
  6.9 s at two, on 2 cores with two other jobs running).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from sensorium.errors import DoctorError


@dataclass
class DoctorConfig:
    enabled: bool = True
    max_nonfinite_in_row: int = 5
    """Consecutive optimiser steps with non-finite loss/gradients before the run is stopped."""
    stall_steps: int = 50
    """Steps after which an unmoved loss triggers a warning (0 disables)."""
    stall_tolerance: float = 0.03
    """Relative change of the loss (mean of the first vs the last quarter of the window) below
    which it counts as not moving; batch-to-batch noise is averaged out by the quarters."""
    share_low: float = 0.05
    share_high: float = 0.95
    share_warmup_steps: int = 10
    """Steps of running average before share warnings (the first steps are noisy)."""
    check_overlap: bool = True
    grad_check_steps: int = 1
    """Backward passes over which every trainable parameter must receive a gradient at least once
    (raise it for tasks whose steps use different parts of the model, e.g. alternating tasks)."""


# --- pure checks ----------------------------------------------------------------------------------
def parameter_counts(module: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def check_batch_labels(labels: torch.Tensor, sampler: str) -> None:
    """Raise DoctorError when a contrastive batch has a single class or no positive pair."""
    labels = labels[labels >= 0]  # -1 marks an unlabelled sample
    values, counts = torch.unique(labels, return_counts=True)
    label_counts = ", ".join(f"{int(v)}: {int(c)}" for v, c in zip(values, counts))
    if len(values) < 2:
        raise DoctorError(
            f"batch from sampler {sampler} holds a single class (label counts {{{label_counts}}}); a "
            "contrastive loss has no negatives and stays at log(B-1). Use a class-balanced sampler.")
    if not bool((counts >= 2).any()):
        raise DoctorError(
            f"batch from sampler {sampler} has no positive pair (label counts {{{label_counts}}}): every "
            "class appears once, so the supervised contrastive loss has nothing to pull together.")


def gradients_finite(module: nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def loss_shares(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each term's |weighted value| / sum of |weighted values|."""
    magnitudes = {name: abs(float(value)) for name, value in terms.items()}
    total = sum(magnitudes.values())
    if total == 0 or not math.isfinite(total):
        return {}
    return {name: m / total for name, m in magnitudes.items()}


def split_overlaps(fingerprints: dict[str, dict[str, str]]) -> list[str]:
    """Problems for samples shared between splits. `fingerprints[split][sample_id] = content_hash`."""
    problems = []
    splits = sorted(fingerprints)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            ids = sorted(set(fingerprints[a]) & set(fingerprints[b]))
            if ids:
                problems.append(f"{len(ids)} sample id(s) in both {a} and {b}, e.g. {ids[:3]}")
            hashes_b = {h: sid for sid, h in fingerprints[b].items()}
            same = [(sid, hashes_b[h]) for sid, h in fingerprints[a].items() if h in hashes_b and sid not in ids]
            if same:
                examples = ", ".join(f"{x} = {y}" for x, y in same[:3])
                problems.append(f"{len(same)} {a} sample(s) with the same content as a {b} sample, e.g. {examples}")
    return problems


def stall_message(losses: list[float], lr: float | None, tolerance: float) -> str | None:
    """A warning when the loss has not moved: compare the means of the first and last quarter."""
    n = max(1, len(losses) // 4)
    first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
    if abs(last - first) > tolerance * max(abs(first), 1e-8):
        return None
    return (f"loss has not moved in {len(losses)} steps ({first:.4g} -> {last:.4g}) at lr {lr:.3g}. Likely causes: "
            "lr too low (or 0 during a long warmup), parameters frozen or detached from the loss, batches "
            "without positives/negatives, a saturated loss (SupCon at log(B-1)), or targets that are constant.")


def runnable_processes(samples: int = 5, interval: float = 0.02) -> float | None:
    """Median number of runnable tasks on the machine right now (Linux `/proc/loadavg`, field 4),
    the caller included; None where that file does not exist."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return None
        time.sleep(interval)
    return statistics.median(counts)


def oversubscription_message(threads: int, cores: int, others: float) -> str | None:
    """A warning when `threads` torch threads plus `others` runnable processes exceed `cores`."""
    free = cores - others
    if threads <= max(free, 1):
        return None
    return (f"CPU oversubscribed: torch uses {threads} threads but only {max(free, 0):g} of {cores} cores are free "
            f"({others:g} other processes running). OpenMP threads then wait for busy cores and steps can be many "
            f"times slower; set OMP_NUM_THREADS (or torch.set_num_threads) to the free cores.")


# --- the Lightning callback -----------------------------------------------------------------------
class Doctor(Callback):
    """The checks above as a Lightning callback. With `collect=True` (used by `sensorium doctor`)
    problems are gathered in `self.problems` instead of stopping the run at the first one."""

    def __init__(self, config: DoctorConfig | None = None, collect: bool = False):
        super().__init__()
        self.config = config or DoctorConfig()
        self.collect = collect
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.nonfinite_steps = 0
        self.nonfinite_in_row = 0
        self._backwards = 0
        self._grad_seen: set[str] = set()
        self._losses: list[float] = []
        self._stall_warned = False
        self._share_avg: dict[str, float] = {}
        self._share_steps = 0
        self._share_warned: set[str] = set()

    # start of fit: counts and overlap
    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            print(f"[doctor] parameters: {format_counts(parameter_counts(pl_module))}")
            if pl_module.device.type == "cpu" and (runnable := runnable_processes()) is not None:
                # runnable counts this process once; its other threads are not running between steps
                message = oversubscription_message(torch.get_num_threads(), os.cpu_count() or 1, runnable - 1)
                if message:
                    self._warn(message)
        datamodule = trainer.datamodule
        if self.config.check_overlap and hasattr(datamodule, "split_fingerprints"):
            problems = split_overlaps(datamodule.split_fingerprints())
            if problems:
                self._problem("train/val/test overlap: " + "; ".join(problems))

    def _problem(self, message: str) -> None:
        if not self.collect:
            raise DoctorError(message)
        if message not in self.problems:
            self.problems.append(message)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(f"[doctor] {message}", stacklevel=3)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if getattr(pl_module, "contrastive", False) and isinstance(batch, dict) and "label" in batch:
            try:
                check_batch_labels(batch["label"], _sampler_name(trainer))
            except DoctorError as e:
                self._problem(str(e))

    def on_after_backward(self, trainer, pl_module) -> None:
        steps = max(1, self.config.grad_check_steps)
        if self._backwards >= steps:
            return
        self._backwards += 1
        self._grad_seen |= {n for n, p in pl_module.named_parameters() if p.requires_grad and p.grad is not None}
        if self._backwards < steps:
            return
        missing = [n for n, p in pl_module.named_parameters() if p.requires_grad and n not in self._grad_seen]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            self._problem(f"{len(missing)} trainable parameter(s) received no gradient in the first {steps} backward "
                          f"pass(es): "
                          f"{shown}. Freeze them (requires_grad=False) or connect them to the loss.")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss = getattr(pl_module, "last_loss", None)
        finite_loss = loss is None or bool(torch.isfinite(loss))
        if finite_loss and gradients_finite(pl_module):
            self.nonfinite_in_row = 0
            return
        # Skip the step: AdamW leaves parameters without a gradient untouched.
        optimizer.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        self.nonfinite_in_row += 1
        pl_module.log("doctor/nonfinite_steps", float(self.nonfinite_steps), on_step=True, on_epoch=False,
                      batch_size=1)  # a per-step count (and Lightning need not guess a batch size)
        what = "loss" if not finite_loss else "gradients"
        print(f"[doctor] step {trainer.global_step}: non-finite {what}; optimiser step skipped "
              f"({self.nonfinite_in_row} in a row, {self.nonfinite_steps} in total)")
        if self.nonfinite_in_row >= self.config.max_nonfinite_in_row:
            self._problem(
                f"{self.nonfinite_in_row} optimiser steps in a row had a non-finite {what} "
                f"(lr {_current_lr(trainer):.3g}); stopping. Lower the lr, enable gradient clipping, use "
                "bf16 instead of fp16, or look for NaN/inf in the inputs.")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and torch.isfinite(loss):
            self._check_stall(trainer, float(loss))
        terms = getattr(pl_module, "loss_terms", {})
        if len(terms) > 1:
            self._check_shares(trainer, pl_module, terms)

    def _check_stall(self, trainer, loss: float) -> None:
        steps = self.config.stall_steps
        if self._stall_warned or steps <= 0 or len(self._losses) >= steps:
            return
        self._losses.append(loss)
        if len(self._losses) == steps:
            message = stall_message(self._losses, _current_lr(trainer), self.config.stall_tolerance)
            if message:
                self._stall_warned = True
                self._warn(message)

    def _check_shares(self, trainer, pl_module, terms: dict[str, torch.Tensor]) -> None:
        shares = loss_shares(terms)
        if not shares:
            return
        self._share_steps += 1
        momentum = min(0.9, 1 - 1 / self._share_steps)  # plain mean over the first steps
        for name, share in shares.items():
            self._share_avg[name] = momentum * self._share_avg.get(name, share) + (1 - momentum) * share
        pl_module.log_dict({f"share/{name}": value for name, value in shares.items()}, on_step=True, on_epoch=True,
                           batch_size=1)  # the epoch value is the mean over steps, each step once
        if self._share_steps < self.config.share_warmup_steps:
            return
        exempt = getattr(pl_module, "share_check_exempt", frozenset())
        for name, avg in self._share_avg.items():
            if name in self._share_warned or name in exempt:
                continue
            if avg < self.config.share_low or avg > self.config.share_high:
                self._share_warned.add(name)
                side = "under" if avg < self.config.share_low else "over"
                bound = self.config.share_low if side == "under" else self.config.share_high
                self._warn(f"loss term '{name}' is {avg:.1%} of the total ({side} {bound:.0%}); its weight "
                           "probably makes it irrelevant or dominant. Shares: "
                           + ", ".join(f"{k} {v:.1%}" for k, v in self._share_avg.items()))

    def state_dict(self) -> dict[str, Any]:
        return {"nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.nonfinite_steps = int(state_dict.get("nonfinite_steps", 0))


def _current_lr(trainer) -> float:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, AttributeError):
        return float("nan")


def _sampler_name(trainer) -> str:
    loader = trainer.train_dataloader
    sampler = getattr(loader, "batch_sampler", None)
    if sampler is None or type(sampler).__name__ == "BatchSampler":
        sampler = getattr(sampler, "sampler", None) or getattr(loader, "sampler", None)
    return type(sampler).__name__ if sampler is not None else "unknown"
