"""What every recipe's LightningModule shares: the optimiser and schedule, loss-term logging that
the doctor reads, gathering across ranks, and the export hooks.

A recipe subclass sets the class attributes (`recipe`, `monitor`, ...), builds its network in
`__init__`, and implements `training_losses(batch) -> {term: weighted scalar}`; the total loss is the
sum of the terms, so each term's share of the total is always visible.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Timer
from torch import nn

from sensorium.config import as_config, to_plain
from sensorium.data.datamodule import DataSpec, SensoriumDataModule, check_val_reads
from sensorium.engine.optim import OptimConfig, build_optimizer, resolve_lr, set_unfrozen, stage_of_parameters
from sensorium.errors import ConfigError

log = logging.getLogger(__name__)


class SensoriumTask(L.LightningModule):
    recipe: ClassVar[str] = "base"
    monitor: ClassVar[str] = "val/loss"
    """Metric that picks best.ckpt and drives early stopping (a task metric, not a loss, where one exists)."""
    monitor_mode: ClassVar[str] = "min"
    contrastive: ClassVar[bool] = False
    """True when batches must contain positive pairs (the doctor then checks classes per batch)."""
    share_check_exempt: ClassVar[frozenset[str]] = frozenset()
    """Loss terms that are small by design (a regulariser such as an eikonal term at weight 1e-3):
    their share is still logged, but the doctor does not warn about it."""

    def __init__(self, optim: OptimConfig | dict | None = None):
        super().__init__()
        self.optim = as_config(OptimConfig, optim)
        self.loss_terms: dict[str, torch.Tensor] = {}  # last step's weighted terms, read by the doctor
        self.last_loss: torch.Tensor | None = None  # last step's total, read by the doctor
        self.resolved_lr: float | None = None
        self._running_loss: torch.Tensor | None = None

    data_spec_type: ClassVar[type[DataSpec] | None] = None
    """The DataSpec subclass this task reads (None: the task needs nothing from its data)."""

    # --- hooks for subclasses -------------------------------------------------------------------
    def configure_data(self, spec: DataSpec) -> None:
        """Receive the datamodule's data contract before the network is configured (build from it, or
        check that a restored network fits it). Called once per stage by `setup`."""

    def feature_encoders(self) -> dict[str, nn.Module]:
        """The encoders whose outputs a datamodule's feature cache may store (`sensorium.data.
        feature_cache`), by the name the datamodule knows them by (welding: the modality): pretrained
        encoders built frozen. Of these, `frozen_encoders` keeps the ones frozen for the whole run.
        Default: none."""
        return {}

    def configure_features(self, stage: str, cached: tuple[str, ...]) -> None:
        """Called in `setup` after the datamodule took the `frozen_encoders` named `cached`: its
        batches carry those encoders' outputs instead of their inputs. Refuse here what needs the
        inputs (an augmentation of them)."""

    def frozen_encoders(self) -> dict[str, nn.Module]:
        """`feature_encoders` whose outputs cannot change during the run: no parameter of theirs
        trains, and no `optim.unfreeze` stage names one (a trainable encoder is never cached)."""
        encoders = self.feature_encoders()
        staged = ({id(p) for n, p in self.named_parameters() if n in stage_of_parameters(self, self.optim.unfreeze)}
                  if self.optim.unfreeze and encoders else set())
        return {name: encoder for name, encoder in encoders.items()
                if not any(p.requires_grad or id(p) in staged for p in encoder.parameters())}

    def setup(self, stage: str) -> None:
        self._setup_data(stage)
        self._setup_features(stage)
        if stage == "fit" and self.optim.unfreeze:
            # DDP, which wraps the module after this hook, syncs only the parameters that require a
            # gradient when it wraps: every stage's are made trainable here (the network exists by
            # now), and `configure_optimizers` freezes those whose epoch has not come.
            set_unfrozen(self, self.optim.unfreeze, epoch=None)

    def _setup_features(self, stage: str) -> None:
        # A datamodule with a feature cache computes the frozen encoders' outputs once (when its
        # loaders are first built) and serves them instead of the encoders' inputs.
        if self._trainer is None or not isinstance(self.trainer.datamodule, SensoriumDataModule):
            return
        cached = self.trainer.datamodule.attach_frozen_encoders(self.frozen_encoders())
        self.configure_features(stage, tuple(cached))

    def _setup_data(self, stage: str) -> None:
        # Lightning sets the datamodule up before the module and calls configure_model after both, so
        # the spec is there for a task that builds its network from the data.
        if self._trainer is None or self.trainer.datamodule is None:
            return
        datamodule = self.trainer.datamodule
        if self.data_spec_type is None:
            if isinstance(datamodule, SensoriumDataModule):
                datamodule.check_fits(stage, self.trainer.accumulate_grad_batches)
            return
        if not isinstance(datamodule, SensoriumDataModule):
            raise ConfigError("data.class_path", f"{type(self).__name__} needs a sensorium DataModule, got "
                                                 f"{type(datamodule).__name__}")
        datamodule.check_fits(stage, self.trainer.accumulate_grad_batches)
        spec = datamodule.data_spec()
        if not isinstance(spec, self.data_spec_type):
            raise ConfigError("data.class_path", f"{type(self).__name__} reads {self.data_spec_type.__name__}, but "
                                                 f"{type(datamodule).__name__} gives {type(spec).__name__}")
        self.configure_data(spec)

    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted loss terms of one training batch; their sum is the loss that is optimised."""
        raise NotImplementedError

    def export_module(self) -> nn.Module:
        """The network written to export/model.safetensors."""
        return self.net

    def export_config(self) -> dict:
        """JSON-able config that rebuilds `export_module()` (written next to the weights)."""
        return {"recipe": self.recipe, "task": type(self).__qualname__, "hparams": to_plain(dict(self.hparams))}

    def save_config(self, **kwargs: Any) -> None:
        """Record init arguments as plain data (dicts, not dataclasses), so checkpoints load with
        `weights_only=True` and `load_from_checkpoint` can rebuild the task."""
        self.save_hyperparameters(to_plain(kwargs))

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.training_losses(batch)
        loss = torch.stack(list(terms.values())).sum()
        self.loss_terms = {name: value.detach() for name, value in terms.items()}
        self.last_loss = loss.detach()
        batch_size = self._batch_size(batch)
        values = {"loss": loss.detach(), **(self.loss_terms if len(terms) > 1 else {})}
        self.log_step_and_epoch({f"train/{name}": value for name, value in values.items()}, batch_size)
        self._log_running_loss(loss.detach(), batch_size)
        if "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float(), on_step=False, on_epoch=True, reduce_fx="sum",
                     sync_dist=True, batch_size=batch_size)
        return loss

    def log_step_and_epoch(self, values: dict[str, torch.Tensor | float], batch_size: int | None = None) -> None:
        """Log each value per step (this rank's, as `<name>_step`) and as an epoch mean over every
        rank's steps (`<name>_epoch`, the names Lightning gives on_step + on_epoch). Lightning's own
        on_step + on_epoch + sync_dist would all-reduce on every step; this reduces once an epoch."""
        self.log_dict({f"{name}_step": value for name, value in values.items()}, on_step=True, on_epoch=False,
                      batch_size=batch_size)
        self.log_dict({f"{name}_epoch": value for name, value in values.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=batch_size)

    def _log_running_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        # An exponential moving average for the progress bar: the raw per-step loss jumps too much
        # to read; the logged `train/loss` keeps every raw value. It stays a device tensor (NaN until
        # the first finite loss; non-finite losses are left out): float(loss) would make the host
        # wait for the accelerator at every step.
        loss = loss.detach().float()
        previous = self._running_loss if self._running_loss is not None else torch.full_like(loss, float("nan"))
        average = torch.where(torch.isfinite(previous), 0.9 * previous + 0.1 * loss, loss)
        self._running_loss = torch.where(torch.isfinite(loss), average, previous)
        # Lightning 2.6 reads every progress-bar value on the host at each batch end (a
        # synchronisation of its own), so without a progress bar to show it the value is not logged.
        if self._trainer is not None and self._trainer.progress_bar_callback is not None:
            self.log("loss", self._running_loss, prog_bar=True, logger=False, on_step=True, on_epoch=False,
                     batch_size=batch_size)  # given, so Lightning does not guess it from the batch (and warn)

    @staticmethod
    def _batch_size(batch: dict[str, Any]) -> int:
        label = batch.get("label")
        if isinstance(label, torch.Tensor):
            return int(label.shape[0])
        first = next(v for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
        return int(first.shape[0])

    def gather(self, x: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        """Concatenate `x` (B, ...) from all ranks -> (world * B, ...). With `sync_grads` the result
        carries gradients back to each rank's own slice (for losses over the global batch)."""
        if self._trainer is None or self._trainer.world_size == 1:  # also usable outside a Trainer
            return x
        return self.all_gather(x, sync_grads=sync_grads).flatten(0, 1)

    # --- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        trainer = self.trainer
        batch_size = trainer.datamodule.batch_size if isinstance(trainer.datamodule, SensoriumDataModule) else None
        if self.optim.base_lr is not None and batch_size is None:
            raise ConfigError("optim.base_lr", "needs the datamodule to expose `batch_size` (or set optim.lr)")
        self.resolved_lr = resolve_lr(self.optim, batch_size or 1, trainer.accumulate_grad_batches,
                                      trainer.world_size)
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        steps_per_epoch = _optimizer_steps_per_epoch(trainer, total_steps)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        time_fraction = None
        # With a max_time the decay also follows the clock; on one process only, since ranks reading
        # their own clocks could step with different lrs and drift apart.
        if timer is not None and timer.time_remaining("train") is not None and trainer.world_size == 1:

            def time_fraction() -> float:
                elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
                return elapsed / max(elapsed + remaining, 1e-9)

        if self.optim.unfreeze:
            self._check_unfreeze_strategy()
            set_unfrozen(self, self.optim.unfreeze, trainer.current_epoch)
        optimizer, scheduler = build_optimizer(self, self.optim, self.resolved_lr, total_steps, steps_per_epoch,
                                               time_fraction)
        if self.optim.base_lr is not None:
            rule = (f"base_lr {self.optim.base_lr:g} x batch {batch_size} x accumulate "
                    f"{trainer.accumulate_grad_batches} x world {trainer.world_size} / 256")
        else:
            rule = "optim.lr"
        if trainer.is_global_zero:
            log.info(f"[sensorium] lr = {self.resolved_lr:.3g} ({rule}); {total_steps} optimiser steps, "
                  f"warmup {self.optim.warmup_epochs:g} epochs, cosine to {self.optim.min_lr:g}"
                  + (" (or by max_time, whichever comes first)" if time_fraction else ""))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_validation_start(self) -> None:
        # While fitting, validation chooses (best.ckpt, early stopping): it must not read test.
        if self.trainer.state.fn == "fit":
            check_val_reads(self.trainer.val_dataloaders, "data (val_dataloader)")

    def on_train_start(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({"lr_resolved": self.resolved_lr}, step=self.global_step)

    def configure_callbacks(self) -> list[Callback]:
        # A callback rather than this module's own epoch hook, which recipes override (tactile does).
        return [StagedUnfreeze()] if self.optim.unfreeze else []

    def _check_unfreeze_strategy(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer.strategy.model
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters:
            raise ConfigError("trainer.strategy", "optim.unfreeze under DDP needs `ddp_find_unused_parameters_true`: "
                                                  "frozen stages get no gradient, which plain DDP waits for")

    # --- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what wrote the checkpoint, so a resume can refuse one that does not fit the run."""
        world = self.trainer.world_size if self._trainer is not None else 1
        checkpoint["sensorium"] = {"recipe": self.recipe, "task": type(self).__qualname__, "world_size": world,
                                   "lr_scales_with_world": self.optim.base_lr is not None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before it loads the weights: a checkpoint of another task would
        # otherwise fail there with a list of missing keys.
        saved = checkpoint.get("sensorium")
        if saved is None:  # written before this record existed, or by plain Lightning
            return
        path = (self.trainer.ckpt_path if self._trainer is not None else None) or "the checkpoint"
        if (saved["recipe"], saved["task"]) != (self.recipe, type(self).__qualname__):
            raise ConfigError(path, f"was written by {saved['recipe']}'s {saved['task']}; this run is "
                                    f"{self.recipe}'s {type(self).__qualname__}")
        # Only when both runs scale the lr by the world size does resuming on another one change it.
        if (self._trainer is not None and self.trainer.state.fn == "fit" and saved["lr_scales_with_world"]
                and self.optim.base_lr is not None and saved["world_size"] != self.trainer.world_size):
            raise ConfigError(path, f"was written by a run on {saved['world_size']} rank(s); resuming on "
                                    f"{self.trainer.world_size} would change the lr that optim.base_lr scales by the "
                                    f"world size mid-run. Resume on {saved['world_size']} rank(s), or set optim.lr "
                                    "to the lr you want (the run's metrics.csv logs lr_resolved)")

    # --- evaluation helpers ---------------------------------------------------------------------
    def gather_eval(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate per-batch results of this rank, then of all ranks (variable lengths allowed:
        evaluation shards are not padded). Returns CPU tensors, identical on every rank."""
        local = {key: torch.cat([p[key].detach().cpu() for p in parts]) for key in parts[0]} if parts else {}
        if self._trainer is None or self._trainer.world_size == 1:  # also usable outside a Trainer
            return local
        import torch.distributed as dist

        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, local)  # every rank calls it, even with nothing to add
        filled = [part for part in everyone if part]
        return {key: torch.cat([part[key] for part in filled]) for key in filled[0]} if filled else {}

    @property
    def run_dir(self):
        """The run directory (RUN in RUN/checkpoints, RUN/eval, ...)."""
        from pathlib import Path

        return Path(self.trainer.default_root_dir)


class StagedUnfreeze(Callback):
    """`optim.unfreeze`: at each epoch start, the stages whose epoch has come train (also right after
    a resume, whose first epoch may lie past several stages). `SensoriumTask` adds it when stages
    are configured; their parameter groups are in the optimiser from the start."""

    def on_train_epoch_start(self, trainer, pl_module: SensoriumTask) -> None:
        stages = pl_module.optim.unfreeze
        for i in set_unfrozen(pl_module, stages, trainer.current_epoch):
            if trainer.is_global_zero and trainer.current_epoch >= stages[i].epoch:
                log.info(f"[sensorium] epoch {trainer.current_epoch}: training {', '.join(stages[i].modules)} "
                         f"at lr x {stages[i].lr_mult:g}")


def _optimizer_steps_per_epoch(trainer, total_steps: int) -> float:
    """Optimiser steps in one training epoch (what `warmup_epochs` counts in): from the epoch's
    batches, which `estimated_stepping_batches` has just loaded. total_steps / max_epochs would be
    wrong whenever max_steps ends the fit first (a warmup of one "epoch" then spanned the whole run),
    and undefined with max_epochs -1."""
    if not math.isfinite(trainer.num_training_batches):
        # With max_epochs -1 and max_steps set, Lightning answers estimated_stepping_batches without
        # loading the data; the fit loop loads it now (it reuses the loader when training starts).
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if batches and math.isfinite(batches):
        return max(1.0, float(math.ceil(batches / trainer.accumulate_grad_batches)))
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
    return total_steps / epochs
