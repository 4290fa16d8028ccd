"""`sensorium demo tactile --out DIR`: synthetic TacQuad -> fit (joint, balanced) -> test of best.ckpt
and of the same encoder untrained -> report -> DIR/summary.json.

Targets (issue 3): at most 15 minutes on 2 CPU cores; frame-4 prediction MSE at most 0.8 x the
copy-frame-3 MSE (`pred_mse_ratio`), and frozen-feature k-NN accuracy on the indenter class at
least 0.10 above the untrained encoder. Reported beside them, with no target: the field's probes of
frozen features on the generator's frame labels (`force_r2`, `contact_mm`, `slip_f1`; trained and
untrained).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sensorium.engine.demo import (
    Stopwatch,
    demo_parser,
    fit,
    parse_demo_args,
    read_json,
    test_checkpoint,
    test_untrained,
    train_seed,
    write_summary,
)

TARGET_RATIO, TARGET_KNN_GAIN = 0.8, 0.10
FIELD = ("force_r2", "contact_mm", "slip_f1")  # DESIGN.md's field metrics for tactile


def main(argv: list[str]) -> int:
    parser = demo_parser("tactile", __doc__)
    parser.add_argument("--items-indoor", type=int, default=300)
    parser.add_argument("--items-outdoor", type=int, default=100)
    args, overrides = parse_demo_args(parser, argv)
    out: Path = args.out
    clock = Stopwatch()

    from sensorium.recipes.tactile.synth import generate

    data = out / "data"
    generate(data, seed=args.seed, items_indoor=args.items_indoor, items_outdoor=args.items_outdoor)
    clock.lap("synth")

    cli = fit(args.config, out / "runs", "demo", "--data.root", str(data), *overrides)
    run_dir = cli.run_dir
    clock.lap("fit")
    test_checkpoint(cli, run_dir / "checkpoints" / "best.ckpt")
    trained = read_json(run_dir / "eval" / "tactile.json")
    baseline_dir = test_untrained(cli, out / "baseline")
    # Next to the trained numbers, so the run's report and `sensorium compare` show both.
    shutil.copyfile(baseline_dir / "eval" / "tactile.json", run_dir / "eval" / "tactile_untrained.json")
    untrained = read_json(run_dir / "eval" / "tactile_untrained.json")
    clock.lap("eval")

    from sensorium.report.report import write_report

    write_report(run_dir)
    clock.lap("report")

    metrics = {key: trained[key] for key in ("pred_mse_ratio", "psnr_masked", "knn_accuracy")}
    # The field's metrics (frozen-feature probes of the synthetic frame labels), where they ran.
    metrics |= {key: trained[key] for key in FIELD if key in trained}
    extra = {key: trained[key] for key in ("pixel_pred_mse_ratio", "pred_mse_ratio_masked", "pred_mse_ratio_sliding",
                                          "pred_mse_ratio_static", "pred_mse", "copy_mse",
                                          "psnr_masked_flat", "linear_probe_accuracy", "standardize",
                                          "protocol", "knn_protocols", "force_rmse", "contact_probes") if key in trained}
    baseline = {"knn_accuracy": untrained["knn_accuracy"]}
    baseline |= {key: untrained[key] for key in (*FIELD, "force_rmse") if key in untrained}
    gain = metrics["knn_accuracy"] - baseline["knn_accuracy"]
    targets = {"pred_mse_ratio_at_most": TARGET_RATIO, "knn_gain_at_least": TARGET_KNN_GAIN,
               "met": metrics["pred_mse_ratio"] <= TARGET_RATIO and gain >= TARGET_KNN_GAIN}
    summary = write_summary(out, "tactile", clock, metrics, baseline, data_seed=args.seed,
                            train_seed=train_seed(cli), metrics_more=extra,
                            baseline_more={"linear_probe_accuracy": untrained["linear_probe_accuracy"],
                                           "pred_mse_ratio": untrained["pred_mse_ratio"],
                                           "knn_protocols": untrained["knn_protocols"],
                                           **({"protocol": untrained["protocol"]} if "protocol" in untrained else {})},
                            targets=targets, run_dir=str(run_dir), report=str(run_dir / "report.html"))
    apart = "".join(f", {name} contacts {trained[f'pred_mse_ratio_{name}']:.3f}" for name in ("sliding", "static")
                    if f"pred_mse_ratio_{name}" in trained)
    print(f"[demo] tactile: frame-4 MSE / copy-frame-3 MSE {metrics['pred_mse_ratio']:.3f} (target <= {TARGET_RATIO}"
          f"{apart}), "
          f"masked PSNR {metrics['psnr_masked']:.2f} dB, k-NN ({_protocol(trained)}) {metrics['knn_accuracy']:.3f} vs "
          f"untrained ({_protocol(untrained)}) {baseline['knn_accuracy']:.3f} ({gain:+.3f}, target >= "
          f"+{TARGET_KNN_GAIN}), linear probe "
          f"{extra['linear_probe_accuracy']:.3f} vs {untrained['linear_probe_accuracy']:.3f}; " + _field_line(metrics, baseline)
          + f"{summary['seconds']:.0f} s -> {out / 'summary.json'}")
    return 0


def _protocol(report: dict) -> str:
    """The probes' protocol of an eval report, and where it was chosen."""
    protocol = report.get("protocol", {})
    relative = ", relative to the reference frame" if protocol.get("reference") else ""
    return (f"{report['pool']} pooling{relative}, standardize {report['standardize']}, k {protocol.get('k', '?')}, "
            f"chosen on {protocol.get('chosen_on', 'config')}")


def _field_line(metrics: dict, baseline: dict) -> str:
    """The contact probes beside the untrained encoder's, or nothing where they did not run."""
    if "force_r2" not in metrics:
        return ""
    parts = [f"{name} {metrics[key]:{fmt}} vs {baseline.get(key, float('nan')):{fmt}}"
             for key, name, fmt in (("force_r2", "force R^2", ".3f"), ("contact_mm", "contact error (mm)", ".2f"),
                                    ("slip_f1", "slip F1", ".3f")) if key in metrics]
    return ", ".join(parts) + " (trained vs untrained); "
