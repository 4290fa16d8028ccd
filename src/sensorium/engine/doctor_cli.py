"""`sensorium doctor --config YAML [--batches N] [overrides]`: the doctor's checks on a few
training batches (forward + backward, weights never updated), before a long run is launched."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium doctor", add_help=False)
    parser.add_argument("--batches", type=int, default=4, help="training batches to check (default 4)")
    known, rest = parser.parse_known_args(argv)
    if not rest or rest[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if rest else 2

    from sensorium.engine.lightning_cli import SensoriumCLI

    cli = SensoriumCLI(args=rest, run=False, doctor_batches=known.batches)
    model, doctor = cli.model, cli.doctor
    cli.trainer.fit(model, datamodule=cli.datamodule)
    print(f"[doctor] checked {cli.trainer.global_step} training batch(es); "
          f"non-finite steps {doctor.nonfinite_steps}")
    for message in doctor.warnings:
        print(f"[doctor] warning: {message}")
    for message in doctor.problems:
        print(f"[doctor] PROBLEM: {message}")
    if doctor.problems:
        print(f"[doctor] {len(doctor.problems)} problem(s) found")
        return 1
    print("[doctor] no problems found")
    return 0
