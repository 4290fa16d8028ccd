"""The doctor: turns the silent failures recorded in the seeds into clear messages.

Checks (each a pure function below, used by the `Doctor` callback during training and by
`sensorium doctor` on a few batches without training):

- classes and positive pairs per batch (contrastive recipes): a batch with a single class or no
  positive pair is an error naming the sampler and the label counts (the welding note's sampler
  returned single-class batches and the SupCon loss sat at log(B-1) for days);
- parameter counts (total / trainable / frozen) at start; trainable parameters that receive no
  gradient in the first backward: an error naming them;
- non-finite loss or gradients: the optimiser step is skipped and counted; after
  `max_nonfinite_in_row` in a row the run stops with a message. Under fp16 with a GradScaler,
  non-finite gradients with a finite loss are the scaler's overflow probe (it skips the step and
  lowers its scale) and are counted apart as `doctor/scaler_skips` while the scale is above
  `scaler_min_scale`;
- a loss that has not moved after `stall_steps` steps: a warning with the current lr and likely causes;
- each term's weighted share of a multi-term loss, logged; a warning when a term is under
  `share_low` or over `share_high` of the total (the cardiac note's IoU stayed at 0 with one term
  under 1%);
- overlap between train / val / test samples by sample id and by content hash: an error;
- reading rules a task declares for itself (`ReadingRules`, returned by the task's `reading_rules`:
  e.g. the tactile note's rules for a joint run): a jump of the loss by more than a factor over a
  short window stops the run; a value the task reports in `doctor_values` whose running average
  leaves its band, or a term's share outside the task's own band, warns; a monitored val metric
  that has not improved for N epochs warns (or stops). One message each;
- on CPU, more torch threads than cores left free by other running processes: a warning (OpenMP
  threads spin-waiting for busy cores made a cardiac demo step 20x slower: 0.35 s at one thread,
  6.9 s at two, on 2 cores with two other jobs running).

Reading a number computed on an accelerator makes the host wait until the device has finished all
queued work. The per-step checks therefore compute their results on the device every step and read
them on the host only on the first `host_check_steps` steps, then every `host_check_every` steps
and at each epoch end (see `DoctorConfig`).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from sensorium.errors import ConfigError, DoctorError

log = logging.getLogger(__name__)


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
    scaler_min_scale: float = 1.0
    """Under `16-mixed` precision Lightning's GradScaler unscales the gradients before the doctor
    sees them. Overflowing (non-finite) gradients with a finite loss are then the scaler's own
    probe: it skips the step and halves its scale, and the first steps of an fp16 run routinely do
    so. Such a step counts as a scaler skip, not a failure, while the scale is above this floor;
    at or below it the scale no longer explains the overflow and the step is a failure."""
    host_check_steps: int = 50
    """Optimiser steps at the start of a run whose checks (finite gradients, stalled loss, loss
    shares, classes per batch) are read on the host at every step."""
    host_check_every: int = 50
    """After `host_check_steps`, read the checks on the host every this many steps (1: every step).
    Each read waits for the accelerator to finish its queued work; in between, the results are
    computed and counted on the device and read at the next check and at each epoch end. Without a
    GradScaler a non-finite step between two reads cannot be skipped (that would need the read),
    so it is applied; it is counted at the next read, and a run whose parameters it made non-finite
    stops there, before a checkpoint is written."""

    def __post_init__(self) -> None:
        if self.host_check_every < 1:
            raise ConfigError("run.doctor.host_check_every", f"must be at least 1, got {self.host_check_every}")


class Band(NamedTuple):
    low: float
    high: float
    advice: str = ""
    """What to do when the value leaves the band (appended to the warning)."""


@dataclass
class ReadingRules:
    """How to read one task's training run, declared by the task (its `reading_rules` attribute or
    property; None: no rules). Thresholds are the task's to configure; each rule gives one message.
    Off by default, field by field."""

    loss_jump: float = 0.0
    """Stop when the mean loss over the last `jump_window` steps exceeds this multiple of the mean
    over the `jump_window` steps before them (0: off). For positive losses."""
    jump_window: int = 5
    """Steps per window of the jump rule (1: step to step)."""
    ranges: dict[str, Band] = field(default_factory=dict)
    """Warn when the running average of a value the task reports each step in `doctor_values`
    (name -> 0-d tensor) leaves its band."""
    share_range: Band | None = None
    """The band each loss term's share must stay in; replaces run.doctor.share_low / share_high."""
    no_progress_epochs: int = 0
    """Warn when the task's monitored val metric (`monitor`, `monitor_mode`) has not improved for
    this many epochs (0: off)."""
    no_progress_stop: bool = False
    """Stop the fit (as early stopping does: checkpoints kept) instead of only warning."""
    source: str = ""
    """Where the rules come from, named in the messages."""

    def __post_init__(self) -> None:
        if self.jump_window < 1:
            raise ConfigError("reading_rules.jump_window", f"must be at least 1, got {self.jump_window}")
        for name, band in [*self.ranges.items(), ("share_range", self.share_range)]:
            if band is not None and not band.low < band.high:
                raise ConfigError(f"reading_rules.{name}", f"needs low < high, got [{band.low}, {band.high}]")


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


def all_finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Whether every value of `tensors` is finite: a 0-d bool tensor (on the tensors' device, or
    `device` for an empty list), computed without a host synchronisation."""
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    # The 1-norm is NaN or inf when a value is; summed in fp32 it overflows only when the values
    # are near fp32's maximum themselves (the 2-norm squares them: any value over 1.8e19 would
    # do). On CPU the 2-norm is about twice as fast, the max-norm twice as slow; on a GPU all three
    # run at memory speed.
    norms = torch._foreach_norm(tensors, 1, dtype=torch.float32)
    if len({n.device for n in norms}) > 1:  # a model split over devices
        norms = [n.to(device) for n in norms]
    return torch.isfinite(torch.stack(norms)).all()


def loss_shares_tensor(terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each term's |weighted value| / sum of |weighted values|, on the device: the shares (K,) in the
    order of `terms`, and a 0-d bool that is False where they are undefined (a total of zero or a
    non-finite one)."""
    magnitudes = torch.stack([value.detach().reshape(()) for value in terms.values()]).float().abs()  # (K,)
    total = magnitudes.sum()
    return magnitudes / total, torch.isfinite(total) & (total > 0)


def step_outcome(loss_finite: torch.Tensor, grads_finite: torch.Tensor, scale: torch.Tensor | None,
                 min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(failure, scaler_skip) of one optimiser step, as 0-d bool tensors.

    `scale` is the GradScaler's current scale (None without one). Non-finite gradients with a
    finite loss while the scale is above `min_scale` are an overflow the scaler skips itself; every
    other non-finite loss or gradient is a failure."""
    nonfinite = ~(loss_finite & grads_finite)
    if scale is None:
        return nonfinite, torch.zeros_like(nonfinite)
    skip = loss_finite & ~grads_finite & (scale > min_scale)
    return nonfinite & ~skip, skip


def host_check_due(step: int, first: int, every: int) -> bool:
    """Whether step `step` (0-based) reads the doctor's checks on the host: each of the first
    `first` steps, then every `every`-th."""
    return step < first or step % every == 0


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


def jump_message(before: float, after: float, step: int, rules: ReadingRules, lr: float) -> str | None:
    """The stop message when the loss rose from the window mean `before` to `after` by more than
    `rules.loss_jump` times, else None."""
    if rules.loss_jump <= 0 or before <= 0 or after <= rules.loss_jump * before:
        return None
    window = "step to step" if rules.jump_window == 1 else f"mean over {rules.jump_window} steps"
    return (f"the loss jumped {after / before:.2f}x ({window}: {before:.4g} -> {after:.4g}, up to step {step}), over "
            f"the {rules.loss_jump:g}x limit{_source(rules)} at lr {lr:.3g}; stopping. Check the lr (and its "
            "warmup), gradient clipping, and the batches of those steps.")


def band_message(name: str, value: float, band: Band, rules: ReadingRules, what: str = "") -> str | None:
    """The warning when `value` (a running average) lies outside `band`, else None."""
    if band.low <= value <= band.high:
        return None
    side = "under" if value < band.low else "over"
    return (f"{what or name} is {value:.3g} on average, {side} its band [{band.low:g}, {band.high:g}]"
            f"{_source(rules)}" + (f". {band.advice}" if band.advice else ""))


def progress_message(metric: str, best: float, best_epoch: int, value: float, epoch: int,
                     rules: ReadingRules) -> str:
    return (f"{metric} has not improved for {epoch - best_epoch} epochs (best {best:.4g} at epoch {best_epoch}, "
            f"{value:.4g} at epoch {epoch}; limit {rules.no_progress_epochs}{_source(rules)})"
            + ("; stopping (checkpoints kept)." if rules.no_progress_stop else
               ". Check the lr, the data and the code (or stop the run)."))


def _source(rules: ReadingRules) -> str:
    return f" ({rules.source})" if rules.source else ""


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


# --- device-side bookkeeping between host checks --------------------------------------------------
class TallyRead(NamedTuple):
    failures: int
    """Failed steps since the start of the run (non-finite, not a scaler skip)."""
    scaler_skips: int
    applied: int
    """Failed steps that nobody skipped: read too late by the doctor and not skipped by a scaler."""
    loss_failures: int
    """Failed steps whose loss was non-finite."""
    in_row: int
    """Failed steps in a row up to the last step."""
    longest_in_row: int
    """Longest run of failed steps since the previous read."""
    last_failed: bool
    last_loss_failed: bool


class _StepTally:
    """The non-finite step counts, updated on the device every step and read on the host (one
    synchronisation) at host checks."""

    def __init__(self, device: torch.device, failures: int = 0, scaler_skips: int = 0):
        self.totals = torch.tensor([failures, scaler_skips, 0, 0], device=device)  # TallyRead's first four
        self.in_row = torch.zeros((), dtype=torch.long, device=device)
        self.longest = torch.zeros((), dtype=torch.long, device=device)
        self.last = torch.zeros(2, dtype=torch.bool, device=device)  # last step: failed, its loss failed

    def add(self, failure: torch.Tensor, skip: torch.Tensor, applied: torch.Tensor,
            loss_failure: torch.Tensor) -> None:
        self.totals += torch.stack([failure, skip, applied, loss_failure])
        self.in_row = torch.where(failure, self.in_row + 1, 0)
        self.longest = torch.maximum(self.longest, self.in_row)
        self.last = torch.stack([failure, loss_failure])

    def logged(self) -> dict[str, torch.Tensor]:
        counts = self.totals[:2].float()  # Lightning reduces floats; counts as floats avoid its warning
        return {"doctor/nonfinite_steps": counts[0], "doctor/scaler_skips": counts[1]}

    def read(self) -> TallyRead:
        values = torch.cat([self.totals, self.in_row[None], self.longest[None], self.last.long()]).tolist()
        self.longest = self.in_row.clone()  # the next read reports runs from here on
        return TallyRead(*values[:6], bool(values[6]), bool(values[7]))


class _ShareStats:
    """Shares of a multi-term loss kept on the device: their running average (read by the share
    warnings at host checks) and this epoch's sums (logged as the epoch mean). Steps whose shares
    are undefined (a non-finite or zero total) are left out of both."""

    def __init__(self, names: tuple[str, ...], device: torch.device, previous: _ShareStats | None = None):
        self.names = names
        self.steps = torch.zeros((), device=device)  # steps averaged so far (sets the momentum)
        self.average = torch.zeros(len(names), device=device)
        self.epoch_sum = torch.zeros(len(names), device=device)
        self.epoch_count = torch.zeros(len(names), device=device)
        if previous is not None:  # the terms changed: keep the statistics of those that remain
            self.steps = previous.steps.clone()
            for i, name in enumerate(names):
                if name in previous.names:
                    j = previous.names.index(name)
                    self.average[i], self.epoch_sum[i] = previous.average[j], previous.epoch_sum[j]
                    self.epoch_count[i] = previous.epoch_count[j]

    def update(self, shares: torch.Tensor, valid: torch.Tensor) -> None:
        self.steps += valid
        momentum = (1 - 1 / self.steps.clamp(min=1)).clamp(max=0.9)  # a plain mean over the first steps
        self.average = torch.where(valid, momentum * self.average + (1 - momentum) * shares, self.average)
        self.epoch_sum += torch.where(valid, shares, 0.0)
        self.epoch_count += valid

    def epoch_means(self) -> dict[str, torch.Tensor]:
        means = self.epoch_sum / self.epoch_count  # NaN for a term without a defined share this epoch
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        return dict(zip(self.names, means.unbind()))


class _RuleWatch:
    """The device side of a task's `ReadingRules`: the last 2 x jump_window losses and the largest
    window-to-window ratio since the last read; running averages of the banded values."""

    def __init__(self, rules: ReadingRules, names: tuple[str, ...], device: torch.device):
        self.rules, self.names = rules, names
        self.window = torch.zeros(2 * rules.jump_window, device=device)  # oldest first
        self.seen = 0  # finite or not, counted on the host: no synchronisation
        self.worst = torch.zeros(3, device=device)  # (ratio, before, after) of the largest jump since the last read
        self.worst_step = torch.zeros((), dtype=torch.long, device=device)
        self.steps = torch.zeros((), device=device)
        self.average = torch.zeros(len(names), device=device)

    def update(self, loss: torch.Tensor | None, values: dict[str, torch.Tensor], step: int) -> None:
        if self.rules.loss_jump > 0 and loss is not None:
            loss = loss.detach().float().reshape(())
            last = self.window[-1] if self.seen else loss
            # A non-finite loss repeats the last one: the non-finite check speaks for it.
            self.window = torch.cat([self.window[1:], torch.where(torch.isfinite(loss), loss, last)[None]])
            self.seen += 1
            if self.seen >= len(self.window):
                w = self.rules.jump_window
                before, after = self.window[:w].mean(), self.window[w:].mean()
                ratio = torch.where(before > 0, after / before, torch.zeros_like(before))
                bigger = ratio > self.worst[0]
                self.worst = torch.where(bigger, torch.stack([ratio, before, after]), self.worst)
                self.worst_step = torch.where(bigger, self.worst_step.new_full((), step), self.worst_step)
        present = [values.get(name) for name in self.names]
        if self.names and all(v is not None for v in present):
            current = torch.stack([v.detach().float().reshape(()) for v in present]).to(self.average.device)
            valid = torch.isfinite(current).all()
            self.steps += valid
            momentum = (1 - 1 / self.steps.clamp(min=1)).clamp(max=0.9)  # a plain mean over the first steps
            self.average = torch.where(valid, momentum * self.average + (1 - momentum) * current, self.average)

    def read(self, strategy=None) -> tuple[list[float], int, float, dict[str, float], float]:
        """(this rank's worst jump (ratio, before, after), its step, averaged steps, {name: average},
        the worst jump ratio over all ranks); resets the jump. With several ranks `strategy` takes the
        largest ratio of all (every rank reads at the same steps), so all stop together or none."""
        values = torch.cat([self.worst, self.worst_step[None].float(), self.steps[None], self.average])
        everyone = values[:1].clone()
        if strategy is not None:
            everyone = strategy.reduce(everyone, reduce_op="max")
        values = torch.cat([values, everyone]).tolist()
        self.worst = torch.zeros_like(self.worst)
        return values[:3], int(values[3]), values[4], dict(zip(self.names, values[5:-1])), values[-1]


# --- the Lightning callback -----------------------------------------------------------------------
class Doctor(Callback):
    """The checks above as a Lightning callback. With `collect=True` (used by `sensorium doctor`)
    problems are gathered in `self.problems` instead of stopping the run at the first one.

    Per-step results stay on the device between host checks (`DoctorConfig.host_check_steps` and
    `host_check_every`): the finite-loss/gradient flags are counted there, the losses of the
    stall check and the shares' running averages are kept as tensors. A host check reads them
    (the only synchronisation), logs, warns and applies the stopping rule."""

    def __init__(self, config: DoctorConfig | None = None, collect: bool = False):
        super().__init__()
        self.config = config or DoctorConfig()
        self.collect = collect
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.nonfinite_steps = 0
        self.nonfinite_in_row = 0
        self.scaler_skips = 0
        self._applied = 0
        self._loss_failures = 0
        self._tally: _StepTally | None = None
        self._parameters: list[nn.Parameter] | None = None
        self._optimizer_steps = 0
        self._batches = 0
        self._backwards = 0
        self._grad_seen: set[str] = set()
        self._pending_losses: list[torch.Tensor] = []
        self._losses: list[float] = []
        self._stall_warned = False
        self._shares: _ShareStats | None = None
        self._share_warned: set[str] = set()
        self._rules: _RuleWatch | None = None
        self._rule_warned: set[str] = set()
        self._best: tuple[float, int] | None = None  # the monitored val metric's best and its epoch

    def _host_check_due(self, step: int) -> bool:
        return host_check_due(step, self.config.host_check_steps, self.config.host_check_every)

    # start of fit: counts and overlap
    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            log.info(f"[doctor] parameters: {format_counts(parameter_counts(pl_module))}")
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
        # torch.unique and the label counts are read on the host: a host check
        if not self._host_check_due(self._batches):
            return
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

    # non-finite loss or gradients
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step, self._optimizer_steps = self._optimizer_steps, self._optimizer_steps + 1
        host_check = self._host_check_due(step)
        if self._parameters is None:  # walking the module's tree every step costs as much as the check
            self._parameters = list(pl_module.parameters())
        grads_finite = all_finite([p.grad for p in self._parameters if p.grad is not None], pl_module.device)
        loss = getattr(pl_module, "last_loss", None)
        loss_finite = torch.isfinite(loss).all() if loss is not None else torch.ones_like(grads_finite)
        # Lightning's MixedPrecision has unscaled the gradients already and steps the scaler after
        # this hook: scaler.step skips a step with non-finite gradients and scaler.update lowers
        # the scale, so this is the scale the overflow happened at.
        scaler = _grad_scaler(trainer)
        scale = _scale_tensor(scaler, grads_finite.device) if scaler is not None else None
        failure, skip = step_outcome(loss_finite, grads_finite, scale, self.config.scaler_min_scale)
        # A failed step goes through unless this host check skips it below, or a scaler skips it
        # for its non-finite gradients.
        if host_check:
            applied = torch.zeros_like(failure)
        else:
            applied = failure & grads_finite if scaler is not None else failure
        tally = self._tally_on(grads_finite.device)
        tally.add(failure, skip, applied, failure & ~loss_finite)
        if _writes_logs(trainer):
            pl_module.log_dict(tally.logged(), on_step=True, on_epoch=False, batch_size=1)  # no batch to guess from
        if host_check:
            self._read_tally(trainer, pl_module, optimizer)

    def _tally_on(self, device: torch.device) -> _StepTally:
        if self._tally is None:  # counts restored from a checkpoint continue
            self._tally = _StepTally(device, self.nonfinite_steps, self.scaler_skips)
        return self._tally

    def _read_tally(self, trainer, pl_module, optimizer=None) -> None:
        """Read the device counts (one synchronisation), report and apply the stopping rule. With
        `optimizer` this is the current step's host check: a failed step is skipped here."""
        if self._tally is None:
            return
        read = self._tally.read()
        new_failures, new_skips = read.failures - self.nonfinite_steps, read.scaler_skips - self.scaler_skips
        new_applied, new_loss_failures = read.applied - self._applied, read.loss_failures - self._loss_failures
        self.nonfinite_steps, self.scaler_skips, self.nonfinite_in_row = read.failures, read.scaler_skips, read.in_row
        self._applied, self._loss_failures = read.applied, read.loss_failures
        step = trainer.global_step
        current = optimizer is not None and read.last_failed
        if current:
            # Skip the step: AdamW leaves parameters without a gradient untouched.
            optimizer.zero_grad(set_to_none=True)
            what = "loss" if read.last_loss_failed else "gradients"
            log.info(f"[doctor] step {step}: non-finite {what}; optimiser step skipped "
                     f"({read.in_row} in a row, {read.failures} in total)")
        if new_failures > int(current):
            log.info(f"[doctor] {new_failures - int(current)} non-finite step(s) before step {step} found at a host "
                     f"check, {new_applied} of them applied (a step between host checks is skipped only by a "
                     f"GradScaler)")
        if new_skips and self.scaler_skips == new_skips and (scaler := _grad_scaler(trainer)) is not None:
            log.info(f"[doctor] {new_skips} step(s) up to step {step} with overflowing gradients: the GradScaler "
                     f"skips them and lowers its scale (now {scaler.get_scale():g}), as usual in the first steps of "
                     "an fp16 run; counted in doctor/scaler_skips, not as failures")
        if read.longest_in_row >= self.config.max_nonfinite_in_row:
            what = "loss" if new_loss_failures else "gradients"
            applied = (f"; {new_applied} of them were applied between host checks (see "
                       "run.doctor.host_check_every)" if new_applied else "")
            self._problem(
                f"{read.longest_in_row} optimiser steps in a row had a non-finite {what} "
                f"(lr {_current_lr(trainer):.3g}){applied}; stopping. Lower the lr, enable gradient clipping, use "
                "bf16 instead of fp16, or look for NaN/inf in the inputs.")
        if new_applied and not bool(all_finite([p.detach() for p in pl_module.parameters()], pl_module.device)):
            self._problem(
                f"parameters are non-finite after {new_applied} non-finite step(s) applied between host checks "
                f"(before step {step}); stopping before a checkpoint is written. Lower the lr, enable gradient "
                "clipping, or look for NaN/inf in the inputs; run.doctor.host_check_every 1 skips every such step.")

    # stalled loss and loss shares
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        index, self._batches = self._batches, self._batches + 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and self._stall_wanted() > len(self._pending_losses):
            self._pending_losses.append(loss.detach().float().reshape(()))
        terms = getattr(pl_module, "loss_terms", {})
        if len(terms) > 1:
            self._update_shares(trainer, pl_module, terms)
        rules = reading_rules(pl_module)
        if rules is not None:
            if self._rules is None or self._rules.rules != rules:
                device = loss.device if isinstance(loss, torch.Tensor) else pl_module.device
                self._rules = _RuleWatch(rules, tuple(rules.ranges), device)
            self._rules.update(loss if isinstance(loss, torch.Tensor) else None,
                               getattr(pl_module, "doctor_values", {}), trainer.global_step)
        if self._host_check_due(index):
            self._read_stall(trainer)
            self._read_shares(pl_module)
            self._read_rules(trainer)

    def _stall_wanted(self) -> int:
        """Losses the stall check still needs."""
        if self._stall_warned or self.config.stall_steps <= 0:
            return 0
        return max(0, self.config.stall_steps - len(self._losses))

    def _read_stall(self, trainer) -> None:
        if not self._pending_losses:
            return
        values = torch.stack(self._pending_losses).tolist()
        self._pending_losses = []
        self._losses += [v for v in values if math.isfinite(v)][:self._stall_wanted()]
        if not self._stall_warned and self.config.stall_steps > 0 and len(self._losses) == self.config.stall_steps:
            message = stall_message(self._losses, _current_lr(trainer), self.config.stall_tolerance)
            if message:
                self._stall_warned = True
                self._warn(message)

    def _update_shares(self, trainer, pl_module, terms: dict[str, torch.Tensor]) -> None:
        shares, valid = loss_shares_tensor(terms)
        names = tuple(terms)
        if self._shares is None or self._shares.names != names:
            self._shares = _ShareStats(names, shares.device, self._shares)
        self._shares.update(shares, valid)
        # This rank's step values; the epoch mean is logged at the epoch end, reduced across ranks once.
        if _writes_logs(trainer):
            pl_module.log_dict({f"share/{name}_step": value for name, value in zip(names, shares.unbind())},
                               on_step=True, on_epoch=False, batch_size=1)

    def _read_shares(self, pl_module) -> None:
        stats = self._shares
        exempt = getattr(pl_module, "share_check_exempt", frozenset())
        if stats is None or all(n in self._share_warned or n in exempt for n in stats.names):
            return
        steps, *averages = torch.cat([stats.steps[None], stats.average]).tolist()
        if steps < self.config.share_warmup_steps:
            return
        rules = reading_rules(pl_module)
        band = rules.share_range if rules is not None else None
        low, high = (band.low, band.high) if band is not None else (self.config.share_low, self.config.share_high)
        average = dict(zip(stats.names, averages))
        for name, avg in average.items():
            if name in self._share_warned or name in exempt:
                continue
            if avg < low or avg > high:
                self._share_warned.add(name)
                side = "under" if avg < low else "over"
                bound = low if side == "under" else high
                why = (f"{band.advice} " if band.advice else "") if band is not None else (
                    "its weight probably makes it irrelevant or dominant. ")
                self._warn(f"loss term '{name}' is {avg:.1%} of the total ({side} {bound:.0%}"
                           + (f", {rules.source}" if band is not None and rules.source else "") + f"); {why}Shares: "
                           + ", ".join(f"{k} {v:.1%}" for k, v in average.items()))

    def _read_rules(self, trainer) -> None:
        watch = self._rules
        if watch is None:
            return
        several = getattr(trainer, "world_size", 1) > 1
        (ratio, before, after), step, steps, averages, worst = watch.read(trainer.strategy if several else None)
        rules = watch.rules
        if "loss_jump" not in self._rule_warned and rules.loss_jump > 0 and worst > rules.loss_jump:
            self._rule_warned.add("loss_jump")
            message = jump_message(before, after, step, rules, _current_lr(trainer)) or (
                f"the loss jumped {worst:.2f}x on another rank, over the {rules.loss_jump:g}x limit{_source(rules)} "
                f"(this rank: {ratio:.2f}x); stopping.")
            self._problem(message)
        if steps < self.config.share_warmup_steps:
            return
        for name, value in averages.items():
            if name not in self._rule_warned and (message := band_message(name, value, rules.ranges[name], rules)):
                self._rule_warned.add(name)
                self._warn(message)

    def on_validation_end(self, trainer, pl_module) -> None:
        rules = reading_rules(pl_module)
        if (rules is None or rules.no_progress_epochs <= 0 or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING or "no_progress" in self._rule_warned):
            return
        metric = getattr(pl_module, "monitor", None)
        value = trainer.callback_metrics.get(metric) if metric else None
        if value is None or not math.isfinite(value := float(value)):
            return
        epoch, sign = trainer.current_epoch, -1.0 if getattr(pl_module, "monitor_mode", "min") == "max" else 1.0
        if self._best is None or sign * value < sign * self._best[0]:
            self._best = (value, epoch)
            return
        if epoch - self._best[1] >= rules.no_progress_epochs:
            self._rule_warned.add("no_progress")
            message = progress_message(metric, *self._best, value, epoch, rules)
            self._warn(message)
            if rules.no_progress_stop:
                trainer.should_stop = True

    # epoch end and validation: read everything, so no checkpoint follows an unnoticed failure
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning runs the checkpoint callbacks after the others: a failure raised here comes first.
        self._read_tally(trainer, pl_module)
        self._read_stall(trainer)
        self._read_shares(pl_module)
        self._read_rules(trainer)
        if self._shares is not None:
            pl_module.log_dict({f"share/{name}_epoch": value for name, value in self._shares.epoch_means().items()},
                               on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def on_validation_start(self, trainer, pl_module) -> None:
        # best.ckpt is written at the end of validation, which runs before on_train_epoch_end
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._read_tally(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._read_tally(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        failures, skips = self._tally.totals[:2].tolist() if self._tally is not None else (
            self.nonfinite_steps, self.scaler_skips)
        return {"nonfinite_steps": failures, "scaler_skips": skips}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.nonfinite_steps = int(state_dict.get("nonfinite_steps", 0))
        self.scaler_skips = int(state_dict.get("scaler_skips", 0))
        self._tally = None


def reading_rules(pl_module) -> ReadingRules | None:
    """The task's reading rules, if it declares any."""
    rules = getattr(pl_module, "reading_rules", None)
    return rules if isinstance(rules, ReadingRules) else None


def _writes_logs(trainer) -> bool:
    """Whether Lightning writes this step's logged values (every `log_every_n_steps`). Per-step
    values are logged only then: each `self.log` costs Python time (0.1-1 ms) on every step it is
    called, and the values of the other steps would be overwritten unread."""
    return trainer._logger_connector.should_update_logs


def _grad_scaler(trainer) -> torch.amp.GradScaler | None:
    """The GradScaler of Lightning's precision plugin (`16-mixed`), if one is scaling."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def _scale_tensor(scaler: torch.amp.GradScaler, device: torch.device) -> torch.Tensor:
    # get_scale() would read the scale on the host; the scale tensor stays where it is.
    scale = scaler._get_scale_async()
    return scale if scale is not None else torch.tensor(scaler.get_scale(), device=device)


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
