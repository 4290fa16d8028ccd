"""`sensorium demo welding --out DIR`: synthetic welding runs -> fit -> k-NN test -> report.

Targets (issue 2): TEST k-NN accuracy >= 0.90, at least 0.20 above the same pipeline with
untrained encoders, and every single-modality ablation below the all-modality accuracy.

Beside them the field's metrics (issue 28; `metrics.field_metrics` defines them): good-vs-defect
AUROC per defect type and their mean, binary F1 (good vs defect), the ECE of the vote shares and
the challenge score, for the trained model and (in `baseline`) the untrained one.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> int:
    parser = demo_parser("welding", __doc__)
    parser.add_argument("--samples-per-class", type=int, default=120)
    args, overrides = parse_demo_args(parser, argv)
    out: Path = args.out
    clock = Stopwatch()

    from sensorium.recipes.welding.synth import generate

    data = out / "data"
    generate(data, seed=args.seed, samples_per_class=args.samples_per_class)
    clock.lap("synth")

    cli = fit(args.config, out / "runs", "demo", "--data.root", str(data), *overrides)
    run_dir = cli.run_dir
    clock.lap("fit")
    test_checkpoint(cli, run_dir / "checkpoints" / "best.ckpt")
    report = read_json(run_dir / "eval" / "knn.json")
    baseline = read_json(test_untrained(cli, out / "baseline") / "eval" / "knn.json")
    clock.lap("eval")

    from sensorium.report.report import write_report

    write_report(run_dir)
    clock.lap("report")

    field = ("auroc_mean", "auroc", "binary_f1", "ece", "challenge_score")
    metrics = {"knn_accuracy": report["accuracy"], "f1_macro": report["f1_macro"], "ablation": report["ablation"],
               **{key: report[key] for key in field}}
    baseline_metrics = {"knn_accuracy": baseline["accuracy"], "auroc_mean": baseline["auroc_mean"],
                        "challenge_score": baseline["challenge_score"]}
    summary = write_summary(out, "welding", clock, metrics, baseline_metrics,
                            data_seed=args.seed, train_seed=train_seed(cli),
                            baseline_ablation=baseline["ablation"], run_dir=str(run_dir),
                            report=str(run_dir / "report.html"))
    ablation = ", ".join(f"{m} {a:.3f}" for m, a in metrics["ablation"].items())
    print(f"[demo] welding: TEST k-NN accuracy {metrics['knn_accuracy']:.3f} (untrained "
          f"{summary['baseline']['knn_accuracy']:.3f}), macro F1 {metrics['f1_macro']:.3f}, single modality: "
          f"{ablation}; mean AUROC {_number(metrics['auroc_mean'])}, binary F1 {metrics['binary_f1']:.3f}, "
          f"ECE {metrics['ece']:.3f}, challenge score {metrics['challenge_score']:.3f} (untrained "
          f"{summary['baseline']['challenge_score']:.3f}); {summary['seconds']:.0f} s -> {out / 'summary.json'}")
    return 0


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
