"""`sensorium demo welding --out DIR`: synthetic welding runs -> fit -> k-NN test -> report.

Targets (issue 2): TEST k-NN accuracy >= 0.90, at least 0.20 above the same pipeline with
untrained encoders, and every single-modality ablation below the all-modality accuracy.
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

    metrics = {"knn_accuracy": report["accuracy"], "f1_macro": report["f1_macro"], "ablation": report["ablation"]}
    summary = write_summary(out, "welding", clock, metrics, {"knn_accuracy": baseline["accuracy"]},
                            data_seed=args.seed, train_seed=train_seed(cli),
                            baseline_ablation=baseline["ablation"], run_dir=str(run_dir),
                            report=str(run_dir / "report.html"))
    ablation = ", ".join(f"{m} {a:.3f}" for m, a in metrics["ablation"].items())
    print(f"[demo] welding: TEST k-NN accuracy {metrics['knn_accuracy']:.3f} (untrained "
          f"{summary['baseline']['knn_accuracy']:.3f}), macro F1 {metrics['f1_macro']:.3f}, single modality: "
          f"{ablation}; {summary['seconds']:.0f} s -> {out / 'summary.json'}")
    return 0
