"""`sensorium eval knn --ckpt RUN/checkpoints/best.ckpt [--data.root DIR] [overrides]`

Embeds all of TRAIN (the k-NN bank) and TEST with the checkpoint and writes RUN/eval/knn.json:
accuracy, macro and weighted precision / recall / F1, a per-class report, the confusion matrix,
the per-modality ablation (k-NN accuracy with only one modality present), the fusion's attention
share per modality, and the field's metrics from the k-NN's vote shares (good-vs-defect AUROC per
defect type and their mean, binary F1 good vs defect, ECE in 15 bins with its reliability bins,
the challenge score: `metrics.field_metrics`); plus RUN/eval/confusion_matrix.png and the TEST
embeddings for the report.
The run's own config.yaml rebuilds the model; `--config` names another.

This is the checkpoint's `test` run: the task's test hooks gather the embeddings and
`metrics.knn_test_report` / `metrics.write_test_eval` measure and write them, so `sensorium test
--config welding/demo --ckpt_path CKPT` writes the same files.
"""

from __future__ import annotations

from sensorium.eval.checkpoint import eval_parser, test_checkpoint


def main(argv: list[str]) -> int:
    args, overrides = eval_parser("sensorium eval knn", __doc__).parse_known_args(argv)
    cli = test_checkpoint(args.ckpt, args.config, overrides)
    print(f"[eval] wrote {cli.run_dir / 'eval' / 'knn.json'}")
    return 0
