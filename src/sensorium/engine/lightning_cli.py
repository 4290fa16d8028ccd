"""`sensorium fit|validate|test`: LightningCLI with the engine's defaults.

The YAML names the task (`model.class_path`) and datamodule (`data.class_path`); everything a run
needs beyond them comes from the `run:` block (RunConfig) and the task's class attributes:
run directory and loggers, best/last checkpoints by the task's monitored metric, early stopping,
the doctor, atomic checkpoint writes, export of the final weights, per-step lr logging.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sensorium import log as sensorium_log
from sensorium.engine.callbacks import AtomicCheckpointIO, ExportFinalWeights, ShareRunDirectory
from sensorium.engine.doctor import Doctor
from sensorium.engine.run import RunConfig, build_loggers, resolve_run_dir, run_dir_of_checkpoint
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError, SensoriumError


class _DropAdvertising(logging.Filter):
    """Lines Lightning logs at every start that a sensorium user cannot act on, so the lines they see
    when a fit starts are sensorium's own (lr and step count, parameter counts, the doctor):
    "💡 Tip: ... try installing [litlogger] / [litmodels]", and "Loading `train_dataloader` to
    estimate number of stepping batches" (the engine's lr line states the step count it found)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡 Tip:") or message.startswith("Loading `train_dataloader` to estimate"))


def silence_lightning_tips() -> None:
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertising) for f in log.filters):
        log.addFilter(_DropAdvertising())


TRAINER_DEFAULTS = {
    # Each datamodule builds its own rank-aware samplers (class-balanced batches must not be
    # re-sharded by Lightning's DistributedSampler wrapper).
    "use_distributed_sampler": False,
    # Lightning's summary table ends in "Total FLOPs: 0" (it counts FLOPs only with an example input)
    # and module-mode counts; the doctor prints the total / trainable / frozen parameters instead.
    "enable_model_summary": False,
}


class SensoriumCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True, doctor_batches: int | None = None, **kwargs):
        """doctor_batches: build a trainer for `sensorium doctor` instead (that many training
        batches, one device, no logs or checkpoints, weights never updated)."""
        # `args` is how sensorium passes its own command lines; LightningCLI warns whenever
        # sys.argv also holds arguments, which is always the case behind the `sensorium` command.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # Lightning's own deprecation of a torch API it calls, and a model-summary note on bf16
        # sizes: neither is something a user of sensorium can act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        warnings.filterwarnings("ignore", message="Precision bf16-mixed is not supported by the model summary")
        # Frozen pretrained encoders (and the doppler VAE's frozen foundation net) are kept in eval
        # mode on purpose by their tasks' train() overrides; the doctor reports frozen parameters.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        silence_lightning_tips()
        sensorium_log.setup()  # the engine's and recipes' messages, on global rank zero only
        self.config_sources = _config_values(args)  # as the user named them, for error messages
        args = resolve_config_args(args)
        self._run_dir: Path | None = None
        self.doctor_batches = doctor_batches
        self.doctor: Doctor | None = None
        super().__init__(
            model_class=SensoriumTask,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            **kwargs,
        )

    @property
    def run_dir(self) -> Path | None:
        """The run directory: once the trainer has run its setup, global rank 0's choice on every rank
        (`ShareRunDirectory`); before that, this process's own."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and self._run_dir is not None:
            return Path(trainer.default_root_dir)
        return self._run_dir

    def instantiate_classes(self) -> None:
        # A model or data class that rejects its YAML values (a width its heads do not divide, an
        # unknown mode) raises ValueError in its constructor: name the config it came from.
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as e:
            cause = _root_cause(e)  # jsonargparse wraps a constructor's error in a multi-line Union report
            if isinstance(cause, SensoriumError):
                raise cause from None
            where = " + ".join(self.config_sources) or "the command line"
            raise ConfigError(where, f"cannot build the run from this configuration: {cause}") from e

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would overwrite the model's config with the checkpoint's hyperparameters.
        # Here the config (the run's config.yaml or the command line) decides what is built and
        # the checkpoint only restores state, so a resumed or evaluated run is what its config says.
        return

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunConfig, "run", fail_untyped=False)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        run: RunConfig = self._get(self.config_init, "run")
        model: SensoriumTask = self.model
        if self.doctor_batches is not None:
            return self._doctor_trainer(run)
        ckpt_path = self._get(self.config, "ckpt_path") if self.subcommand else None
        existing = run_dir_of_checkpoint(ckpt_path)
        self._run_dir = resolve_run_dir(run, model.recipe, existing)
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if trainer_config.get("logger") in (None, True):
            # A validate/test pass of an existing run logs to its own sub-directory so the fit's
            # metrics.csv stays as it was.
            sub_dir = self.subcommand if existing is not None and self.subcommand != "fit" else None
            trainer_config["logger"] = build_loggers(run, self._run_dir, sub_dir)
        trainer_config["default_root_dir"] = str(self._run_dir)
        trainer_config["plugins"] = [*(trainer_config.get("plugins") or []), AtomicCheckpointIO()]
        # First of all callbacks (the config's trainer.callbacks come before those passed below), so
        # that every later setup hook sees the directory all ranks share.
        configured = trainer_config.get("callbacks") or []
        trainer_config["callbacks"] = [ShareRunDirectory(self._run_dir),
                                       *(configured if isinstance(configured, list) else [configured])]
        callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        callbacks += engine_callbacks(run, model, self._run_dir, fit=self.subcommand in (None, "fit"))
        return self._instantiate_trainer(trainer_config, callbacks)


    def _doctor_trainer(self, run: RunConfig) -> L.Trainer:
        trainer_config = {**self._get(self.config_init, "trainer", default={})}
        trainer_config.update(
            devices=1, strategy="auto", num_nodes=1, max_epochs=1, max_steps=-1, limit_train_batches=self.doctor_batches,
            limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            accumulate_grad_batches=1, callbacks=[], enable_model_summary=False)
        self.doctor = Doctor(run.doctor, collect=True)
        return L.Trainer(**{**trainer_config, "callbacks": [self.doctor, KeepWeights()]})


def resolve_config_args(args: list[str] | None) -> list[str] | None:
    """Each `--config VALUE` (or `--config=VALUE`) with VALUE a YAML path or a packaged name such
    as `welding/demo` -> the YAML's path (see `sensorium.recipes.resolve_config`)."""
    from sensorium.recipes import resolve_config

    if args is None:
        return None
    resolved, args = [], list(args)
    while args:
        arg = args.pop(0)
        if arg == "--config" and args:
            resolved += [arg, str(resolve_config(args.pop(0)))]
        elif arg.startswith("--config="):
            resolved.append(f"--config={resolve_config(arg.split('=', 1)[1])}")
        else:
            resolved.append(arg)
    return resolved


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def _config_values(args: list[str] | None) -> list[str]:
    """The `--config` values of a command line, in order."""
    args = list(args or [])
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"] + \
        [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


class KeepWeights(L.Callback):
    """Drops every gradient just before the optimiser step (after the doctor has looked at them),
    so `sensorium doctor` runs forward and backward passes without changing the model."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)


def engine_callbacks(run: RunConfig, model: SensoriumTask, run_dir: Path, fit: bool = True) -> list:
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        # best.ckpt by the task's metric; last.ckpt after every training epoch. Two callbacks,
        # because Lightning's save_last only refreshes last.ckpt when best.ckpt improves.
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=model.monitor, mode=model.monitor_mode,
                        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                        save_on_train_epoch_end=True, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
    ]
    if run.doctor.enabled:
        callbacks.append(Doctor(run.doctor))
    if run.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=model.monitor, mode=model.monitor_mode,
                                       patience=run.early_stopping_patience))
    if fit and run.export:
        callbacks.append(ExportFinalWeights(run_dir / "export"))
    return callbacks


def run_lightning(argv: list[str]) -> int:
    """Entry point of `sensorium fit|validate|test ...`."""
    # DDP's launcher re-runs sys.argv for the other ranks, so sys.argv stays untouched.
    SensoriumCLI(args=argv)
    return 0
