"""`sensorium eval rgbpc --ckpt RUN/checkpoints/best.ckpt [--student DISTIL_RUN/export] [overrides]`

Runs the alignment task's test on the held-out episodes and writes RUN/eval/rgbpc.json:

- point -> patch and patch -> point top-1 / top-5 among the candidates of a retrieval batch
  (data.eval_windows held-out steps x data.eval_points points; the chance level is stated), and the
  variant that accepts any point of the same frame within one patch of the right one;
- set level top-1 / top-5 (one window's K points against its patches, among the batch's windows);
- **the action-head test**: one head architecture (`model.ActionHead`), fitted on the steps of a
  few TRAIN episodes (data.action_train_episodes) and measured on every held-out step, fed in turn
  with (a) `pc`: the teacher's point features, (b) `rgb_aligned`: the fused RGB features after
  alignment, (c) `rgb_raw`: the same fusion with untrained adapters (the alignment net as
  initialised, seed evaluation.raw_seed), (d) `student`: the distilled RGB-only student's features
  (with --student); all at the same points. Error = E|predicted - true action|^2 / E|action -
  its mean|^2 on the held-out steps (1 = predicting the mean), averaged over
  evaluation.action_seeds head initialisations; `gap_closed` = (c - b) / (c - a), the share of the
  raw-RGB -> point-cloud gap the aligned features close (and the same for the student);
- a linear (ridge) depth probe per point on (b) vs (c) (and a, d): R^2 and RMSE of camera depth;
- positive vs negative cosine similarity histograms (eval/similarity_histogram.png) and the fusion
  weights or gate statistics per encoder.

The test hooks of `task.AlignTask` compute all of it with the functions of metrics.py.
"""

from __future__ import annotations

from pathlib import Path


def main(argv: list[str]) -> int:
    from sensorium.eval.checkpoint import eval_parser, test_checkpoint

    parser = eval_parser("sensorium eval rgbpc", __doc__)
    parser.add_argument("--student", type=Path, default=None,
                        help="export directory of a distilled student (`sensorium fit --config rgbpc/distil`)")
    args, overrides = parser.parse_known_args(argv)
    if args.student is not None:
        overrides = [*overrides, "--model.init_args.evaluation.student", str(args.student)]
    cli = test_checkpoint(args.ckpt, args.config, overrides)
    print(f"[eval] wrote {cli.run_dir / 'eval' / 'rgbpc.json'}")
    return 0
