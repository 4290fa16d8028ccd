"""Run directories and loggers.

    runs/<recipe>/<version>/
        config.yaml  metrics.csv  hparams.yaml
        checkpoints/{last,best}.ckpt
        export/{model.safetensors,config.json}
        eval/*.json, *.png
        report.html
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from sensorium.engine.doctor import DoctorConfig
from sensorium.errors import ConfigError


@dataclass
class RunConfig:
    """Where a run writes and what it logs (the `run:` block in YAML)."""

    root: str = "runs"
    """Runs go to <root>/<recipe>/<version>/."""
    version: str | None = None
    """Run name; default: the next free `version_N`."""
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    """Any of csv (always on), tensorboard, wandb."""
    wandb_project: str = "sensorium"
    wandb_offline: bool = True
    """W&B writes locally unless this is false (this machine has no network)."""
    early_stopping_patience: int | None = None
    """Validation epochs without improvement of the monitored metric before stopping; None: off."""
    export: bool = True
    """Write export/model.safetensors + config.json at the end of fit."""
    doctor: DoctorConfig = field(default_factory=DoctorConfig)


def next_version(recipe_dir: Path) -> str:
    taken = [int(m.group(1)) for p in recipe_dir.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return f"version_{max(taken, default=-1) + 1}"


def resolve_run_dir(run: RunConfig, recipe: str, existing: Path | None = None) -> Path:
    """This process's choice of run directory: `existing` (a resumed or evaluated run) or
    <root>/<recipe>/<version>. Each rank chooses before the process group exists, and without a
    version ranks may see different free versions; `ShareRunDirectory` then makes global rank 0's
    choice every rank's."""
    if existing is not None:
        return existing
    recipe_dir = Path(run.root) / recipe
    return recipe_dir / (run.version or next_version(recipe_dir))


def run_dir_of_checkpoint(ckpt_path: str | os.PathLike | None) -> Path | None:
    """RUN for RUN/checkpoints/<name>.ckpt; None for any other path."""
    if not ckpt_path or str(ckpt_path) in ("best", "last", "hpc", "registry"):
        return None
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def build_loggers(run: RunConfig, run_dir: Path, sub_dir: str | None = None) -> list:
    """CSV always (first, so trainer.log_dir is the run dir), plus TensorBoard / W&B on request.
    `sub_dir` keeps a validate/test pass of an existing run from touching the fit's metrics.csv."""
    unknown = set(run.loggers) - {"csv", "tensorboard", "wandb"}
    if unknown:
        raise ConfigError("run.loggers", f"unknown logger(s) {sorted(unknown)}; use csv, tensorboard, wandb")
    save_dir, name = str(run_dir.parent), run_dir.name
    version = sub_dir or ""
    loggers = [ResumableCSVLogger(save_dir=save_dir, name=name, version=version)]
    if "tensorboard" in run.loggers:
        loggers.append(TensorBoardLogger(save_dir=save_dir, name=name, version=version, sub_dir="tensorboard",
                                         default_hp_metric=False))
    if "wandb" in run.loggers:
        loggers.append(WandbLogger(save_dir=str(run_dir), project=run.wandb_project, name=f"{run_dir.parent.name}/{name}",
                                   offline=run.wandb_offline))
    return loggers


class _ResumableWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv (and would forget its header); a resumed
    run keeps it and appends, widening the header when new metrics appear."""

    def _check_log_dir_exists(self) -> None:
        pass  # keep an existing metrics.csv

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment  # as CSVLogger's: other ranks would create their own, not yet shared, run dir
    def experiment(self) -> _ResumableWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(log_dir=self.log_dir)
        return self._experiment
