"""Run the engine's CLI in-process on the toy recipe."""

from __future__ import annotations

from pathlib import Path

TOY = ["--model", "toy_recipe.ToyTask", "--data", "toy_recipe.ToyDataModule", "--trainer.accelerator", "cpu",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--trainer.log_every_n_steps", "1", "--model.optim.lr", "0.01"]


def toy_cli(tmp_path: Path, *extra: str, subcommand: str = "fit", epochs: int | None = 2):
    from sensorium.engine.lightning_cli import SensoriumCLI

    args = [subcommand, *TOY, "--run.root", str(tmp_path / "runs"), *extra]
    if subcommand == "fit" and epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    return SensoriumCLI(args=args)
