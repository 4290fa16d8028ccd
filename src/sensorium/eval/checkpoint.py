"""What every `sensorium eval <recipe> --ckpt PATH` shares: the two arguments, finding the YAML the
checkpoint was trained with, and running the recipe's test step on it through LightningCLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from sensorium.errors import ConfigError


def eval_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with --ckpt and --config; recipes add their own flags, unknown ones go to LightningCLI."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--config", default=None,
                        help="a YAML path or packaged name (default: RUN/config.yaml of the checkpoint)")
    return parser


def test_checkpoint(ckpt: Path, config: str | Path | None, overrides: list[str]):
    """Run `test` on `ckpt` with `config` (default: the checkpoint's RUN/config.yaml); returns the CLI,
    whose `run_dir / "eval"` holds what the recipe's test step wrote."""
    from sensorium.engine.run import run_dir_of_checkpoint

    if not ckpt.is_file():
        raise ConfigError(ckpt, "no such checkpoint")
    if config is None:
        run_dir = run_dir_of_checkpoint(ckpt)
        config = run_dir / "config.yaml" if run_dir else None
        if config is None or not config.is_file():
            raise ConfigError(ckpt, "no config.yaml beside its run directory: pass --config (the YAML the "
                                    "model was trained with)")

    from sensorium.engine.lightning_cli import SensoriumCLI

    return SensoriumCLI(args=["test", "--config", str(config), "--ckpt_path", str(ckpt), *overrides])
