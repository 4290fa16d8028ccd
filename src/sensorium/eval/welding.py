"""`sensorium eval knn --ckpt RUN/checkpoints/best.ckpt [--data.root DIR] [overrides]`

Embeds all of TRAIN (the k-NN bank) and TEST with the checkpoint and writes RUN/eval/knn.json:
accuracy, macro and weighted precision / recall / F1, a per-class report, the confusion matrix,
the per-modality ablation (k-NN accuracy with only one modality present), the fusion's attention
share per modality; plus RUN/eval/confusion_matrix.png and the TEST embeddings for the report.
The run's own config.yaml rebuilds the model; `--config` names another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensorium.engine.run import run_dir_of_checkpoint


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium eval knn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None, help="default: RUN/config.yaml of the checkpoint")
    args, overrides = parser.parse_known_args(argv)
    if not args.ckpt.is_file():
        raise FileNotFoundError(f"{args.ckpt}: no such checkpoint")
    run_dir = run_dir_of_checkpoint(args.ckpt)
    config = args.config or (run_dir / "config.yaml" if run_dir else None)
    if config is None or not config.is_file():
        raise FileNotFoundError(f"no config for {args.ckpt}: pass --config (the YAML the model was trained with)")

    from sensorium.engine.lightning_cli import SensoriumCLI

    cli = SensoriumCLI(args=["test", "--config", str(config), "--ckpt_path", str(args.ckpt), *overrides])
    print(f"[eval] wrote {cli.run_dir / 'eval' / 'knn.json'}")
    return 0
