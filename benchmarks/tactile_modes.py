"""Tactile training modes compared at demo scale: alternating vs joint with fixed weights vs joint
with automatic balancing (the PhysioTouch note's question, answered by measurement).

    python benchmarks/tactile_modes.py --out DIR [--modes alternating joint_fixed joint_075 demo]
                                       [--threads 1] [overrides ...]

One synthetic TacQuad dataset (the demo's: `sensorium synth tactile`, seed 0) is written once;
each mode then trains its packaged config tactile/<mode> (same model, data, epochs and lr schedule;
only the `loss` block differs) into DIR/runs/tactile/<mode>, and its best checkpoint is tested
as the demo does. The untrained encoder is evaluated once (all modes start from the same
initialisation: same seed, same model config). Printed: one table with the final unweighted
epoch losses (static, dynamic = recon + pred), the frame-4 prediction MSE / copy-frame-3 MSE on
TEST objects, masked PSNR, k-NN and linear-probe accuracy on the indenter class, and the fit time;
DIR/compare.html overlays the runs' curves (`sensorium compare`).

Extra arguments are LightningCLI overrides applied to every mode (e.g. --trainer.max_epochs=10 for
a shorter comparison). Times depend on the machine's load: run nothing else beside it, or read
them as upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# mode name -> packaged config tactile/<name> (demo is joint with automatic balancing)
MODES = {
    "alternating": "alternating",
    "joint_fixed": "joint_fixed",
    "joint_075": "joint_075",
    "joint_balanced": "demo",
}
COLUMNS = [  # (header, key in the collected row, format)
    ("mode", "mode", "{}"),
    ("loss_static", "loss_static", "{:.4f}"),
    ("loss_dynamic", "loss_dynamic", "{:.4f}"),
    ("loss_pred", "loss_pred", "{:.4f}"),
    ("frame4/copy", "pred_mse_ratio", "{:.3f}"),
    ("PSNR dB", "psnr_masked", "{:.2f}"),
    ("k-NN", "knn_accuracy", "{:.3f}"),
    ("k-NN gain", "knn_gain", "{:+.3f}"),
    ("lin. probe", "linear_probe_accuracy", "{:.3f}"),
    ("fit s", "fit_seconds", "{:.0f}"),
]


def _final_epoch_value(run_dir: Path, key: str) -> float:
    from sensorium.report.curves import read_metrics

    metrics = read_metrics(run_dir / "metrics.csv")
    return float(metrics[key][1][-1]) if key in metrics else float("nan")


def run_mode(name: str, config: Path, data: Path, runs: Path, overrides: list[str]) -> tuple[dict, object]:
    from sensorium.engine.demo import fit, test_checkpoint

    start = time.perf_counter()
    cli = fit(config, runs, name, "--data.root", str(data), *overrides)
    fit_seconds = time.perf_counter() - start
    run_dir = test_checkpoint(cli, cli.run_dir / "checkpoints" / "best.ckpt")
    report = json.loads((run_dir / "eval" / "tactile.json").read_text())
    row = {"mode": name, "run_dir": str(run_dir), "fit_seconds": fit_seconds,
           **{k: _final_epoch_value(run_dir, f"train/{k}_epoch") for k in ("loss_static", "loss_dynamic",
                                                                             "loss_pred")},
           **{k: report[k] for k in ("pred_mse_ratio", "psnr_masked", "knn_accuracy", "linear_probe_accuracy")}}
    return row, cli


def format_table(rows: list[dict]) -> str:
    cells = [[h for h, _, _ in COLUMNS]] + [[f.format(row[k]) for _, k, f in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--items-indoor", type=int, default=300)
    parser.add_argument("--items-outdoor", type=int, default=100)
    args, overrides = parser.parse_known_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sensorium.engine.demo import read_json, test_untrained
    from sensorium.recipes.tactile.synth import generate
    from sensorium.report.compare import write_comparison

    data = args.out / "data"
    if not (data / "synth.json").is_file():
        generate(data, seed=args.seed, items_indoor=args.items_indoor, items_outdoor=args.items_outdoor)
    rows, untrained = [], None
    for name in args.modes:
        os.environ.pop("SENSORIUM_RUN_DIR", None)
        row, cli = run_mode(name, f"tactile/{MODES[name]}", data, args.out / "runs", overrides)
        if untrained is None:  # the same initialisation for every mode: evaluate it once
            untrained = read_json(test_untrained(cli, args.out / "untrained") / "eval" / "tactile.json")
        row["knn_gain"] = row["knn_accuracy"] - untrained["knn_accuracy"]
        rows.append(row)
        print(f"[modes] {name}: {json.dumps({k: v for k, v in row.items() if k != 'run_dir'})}", flush=True)

    page = write_comparison([Path(r["run_dir"]) for r in rows], args.out / "compare.html")
    (args.out / "modes.json").write_text(json.dumps({"rows": rows, "untrained": {
        k: untrained[k] for k in ("pred_mse_ratio", "knn_accuracy", "linear_probe_accuracy")},
        "overrides": overrides}, indent=2))
    print(f"\nTactile training modes, demo scale, TEST objects (untrained encoder: k-NN "
          f"{untrained['knn_accuracy']:.3f}, linear probe {untrained['linear_probe_accuracy']:.3f}; "
          f"frame4/copy 1 = copying frame 3; losses: last epoch's mean, unweighted)")
    print(format_table(rows))
    print(f"\n{page}  |  {args.out / 'modes.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
