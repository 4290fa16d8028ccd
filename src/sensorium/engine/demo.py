"""The stages every recipe's demo shares: fit, test a checkpoint (or the untrained model), time the
stages, and write summary.json with the measured numbers."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sensorium.engine.checkpoint import atomic_write_json


def demo_parser(recipe: str, description: str | None) -> argparse.ArgumentParser:
    """The arguments every `sensorium demo <recipe>` takes: --out, --seed (the synthetic dataset),
    --train-seed (Lightning's seed_everything: weights, batches, augmentation; default: the
    config's), --config (default <recipe>/demo) and trailing LightningCLI overrides. Data and
    training seeds are kept apart, so that a spread of results can be traced to the data sample or
    to training (benchmarks/seeds.py runs grids of both). Recipes add their own flags."""
    parser = argparse.ArgumentParser(prog=f"sensorium demo {recipe}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage=f"sensorium demo {recipe} --out DIR [options] [LightningCLI overrides]",
                                     epilog="Any other arguments go to the fit as LightningCLI overrides, in "
                                            "their order: --model.init_args.x 1 or --model.init_args.x=1.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="data seed: which synthetic dataset (default 0)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="training seed, seed_everything (default: the config's)")
    parser.add_argument("--config", default=f"{recipe}/demo",
                        help="a YAML path or a packaged name (default: %(default)s)")
    # No positional for the overrides: argparse would take the values of "--flag value" pairs into it
    # and leave their flags among the unknown arguments, so the fit got the values and flags apart.
    # Without it every argument the parser does not know stays in `unknown`, in its order.
    return parser


def parse_demo_args(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(args, LightningCLI overrides). `args.config` is resolved first, so a bad --config fails before
    minutes of synthesis; `args.out` exists afterwards; the overrides carry --train-seed."""
    from sensorium.recipes import resolve_config

    args, unknown = parser.parse_known_args(argv)
    if "--" in unknown:  # the separator before the overrides (`sensorium demo R --out D -- --x 1`) is not one
        unknown.remove("--")
    args.config = resolve_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    seed = [] if args.train_seed is None else ["--seed_everything", str(args.train_seed)]
    return args, [*seed, *unknown]


def train_seed(cli) -> int | None:
    """The seed_everything a fit (or test) CLI ran with."""
    config = cli.config[cli.subcommand] if cli.subcommand else cli.config
    seed = config.get("seed_everything")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def fit(config: str | Path, runs: Path, version: str, *overrides: str):
    """Train with LightningCLI into <runs>/<recipe>/<version>; returns the CLI (its trainer, model
    and datamodule stay usable: the demo tests on the same datamodule, decoded data included)."""
    from sensorium.engine.lightning_cli import SensoriumCLI

    return SensoriumCLI(args=["fit", "--config", str(config), "--run.root", str(runs), "--run.version", version,
                              *overrides])


def test_checkpoint(cli, ckpt: Path) -> Path:
    """The recipe's test step on `ckpt`, writing <run>/eval/; returns the run directory."""
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt))
    return cli.run_dir


def test_untrained(cli, out_dir: Path, **hparams) -> Path:
    """The same pipeline with the model as initialised before training (same seed, same config),
    evaluated on the same data; writes <out_dir>/eval/ and returns out_dir. `hparams` replace the
    model's own (for example evaluation settings that cannot change an untrained model's result)."""
    import lightning as L

    seed = train_seed(cli)  # fit (demo) or test (eval): the same initialisation as the trained model
    L.seed_everything(seed if seed is not None else 0, verbose=False)
    model = type(cli.model)(**{**dict(cli.model.hparams), **hparams})
    # The accelerator by name: given the fit's Accelerator instance, Lightning builds the mixed-precision
    # plugin for "cuda", and on a CPU autocast is then disabled (the baseline ran in fp32, the model in bf16).
    accelerator = cli.trainer.strategy.root_device.type
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=cli.trainer.precision_plugin.precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(out_dir))
    trainer.test(model, datamodule=cli.datamodule)
    return out_dir


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._last = self.start

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = round(now - self._last, 1)
        self._last = now
        print(f"[demo] {stage}: {self.stages[stage]:.1f} s")

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def write_summary(out: Path, recipe: str, clock: Stopwatch, metrics: dict, baseline: dict, *, data_seed: int,
                  train_seed: int | None, **extra) -> dict:
    summary = {"recipe": recipe, "seconds": clock.seconds, "metrics": metrics, "baseline": baseline,
               "data_seed": data_seed, "train_seed": train_seed, "stages_seconds": clock.stages,
               "threads": torch_threads(), **extra}
    atomic_write_json(out / "summary.json", summary)
    return summary


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)
