"""Lightning plug-ins of the engine: one run directory for all ranks, atomic checkpoint I/O and
the export of final weights."""

from __future__ import annotations

import logging

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from sensorium.engine.checkpoint import atomic_torch_save, export_model

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file and are renamed over the destination, so an interrupted
    write never leaves a corrupt `last.ckpt` (the welding note lost runs to a full disk)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)


class ShareRunDirectory(Callback):
    """Makes global rank 0's run directory every rank's, whatever launched the processes.

    Each rank picks its run directory while LightningCLI builds the trainer, before the process group
    exists; without `run.version`, a rank that sees other versions on disk (another job started in
    between, a lagging network file system) picks another `version_N`. `setup` is the first hook
    with a process group: there rank 0's choice is broadcast and the other ranks write to it. No
    rank creates the directory before then (loggers create theirs on rank 0 only).

    Place it first among the trainer's callbacks, so that every later `setup` sees the shared
    directory. Datamodules are set up before callbacks and must not use the run directory.
    """

    def __init__(self, run_dir: str | Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Absolute: rank 0's relative path would name another directory in a rank with another
        # working directory.
        chosen = Path(trainer.strategy.broadcast(os.path.abspath(self.run_dir)))
        if chosen == Path(os.path.abspath(self.run_dir)):
            return
        trainer._default_root_dir = str(chosen)  # Trainer.default_root_dir has no setter
        for callback in trainer.callbacks:
            if isinstance(callback, ExportFinalWeights):
                callback.export_dir = _moved(callback.export_dir, self.run_dir, chosen)
        # Not moved here: ModelCheckpoint broadcasts its own dirpath in its setup; loggers write on
        # rank 0 only, and Lightning broadcasts trainer.log_dir.
        self.run_dir = chosen


def _moved(path: Path, old: Path, new: Path) -> Path:
    """`path` with its `old` prefix replaced by `new`; any other path as it is."""
    path, old = Path(os.path.abspath(path)), Path(os.path.abspath(old))
    return new / path.relative_to(old) if path.is_relative_to(old) else path


class ExportFinalWeights(Callback):
    """At the end of fit, write RUN/export/model.safetensors and config.json (rank 0 only)."""

    def __init__(self, export_dir: str | Path):
        super().__init__()
        self.export_dir = Path(export_dir)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        config = dict(pl_module.export_config())
        config["epoch"] = trainer.current_epoch
        config["global_step"] = trainer.global_step
        path = export_model(pl_module.export_module(), config, self.export_dir)
        log.info(f"[sensorium] exported final weights to {path}")
