"""Tactile evaluation: frame-4 prediction against copying frame 3, masked reconstruction PSNR,
frozen-feature probes on the indenter class, and a picture grid per sensor.

    sensorium eval tactile --ckpt RUN/checkpoints/best.ckpt [--untrained] [--data.root DIR] [overrides]

runs the task's test pass (TEST windows as queries; TRAIN + VAL windows as the probe bank) and
writes RUN/eval/tactile.json and RUN/eval/grid_<sensor>.png; `--untrained` also evaluates the same
config at initialisation (same seed) into RUN/eval/tactile_untrained.json, the probes' baseline.

What is measured (all on held-out objects):

1. Frame-4 prediction. The model sees frames 1-3 WHOLE (mask ratio 0: the copy predictor sees
   frame 3 whole too) and predicts every patch of frame 4. Its squared error over all pixels of
   frame 4 is divided by that of the trivial predictor "copy frame 3", both in the loss's target
   space (per-patch normalised patches under norm_pix) -> `pred_mse_ratio`; and in [0, 1] pixels
   -> `pixel_pred_mse_ratio`, where a norm_pix prediction is mapped back with frame 3's own patch
   mean and std (inputs only: nothing of frame 4 is used). The same at the training mask ratio
   (frames 1-3 masked, as trained) is reported too. Below 1 means the motion was learned.
2. Reconstruction of the static frame at the training mask ratio: PSNR in [0, 1] pixels over the
   masked patches (`psnr_masked`). Under norm_pix the prediction is mapped back to pixels with
   the target patch's own mean and std, as MAE's figures do, so the PSNR scores structure inside
   patches; `psnr_masked_flat` is the same for a flat patch at that true mean (the reference).
3. Frozen encoder features of the static frame (no masking; mean of the patch tokens, or CLS),
   standardised per dimension with statistics fitted on the bank (per sensor by default,
   `evaluation.standardize`): weighted k-NN and a linear probe on the indenter class
   (`sensorium.eval.probes`); `knn_protocols` holds the k-NN under every pooling and
   standardisation, so the chosen protocol can be read against the others.
4. Where the windows have frame labels (frame_labels.csv beside the frames; synthetic data has
   them, real TacQuad does not and these are skipped with a note in `contact_probes`), the field's
   probes of the same frozen features (TacBench / AnyTouch style): force by ridge regression
   (`force_r2`, `force_rmse` in N), the contact centre by ridge regression (`contact_mm`: mean
   Euclidean error in mm over contact frames) and slip by logistic regression (`slip_f1`: F1 of
   sliding against static contacts). Fitted on TRAIN, regularisation chosen on VAL, refitted on
   train + val, scored on TEST; `contact_probes` holds the choices, the sizes and the trivial
   predictors' scores (`*_constant`).

The measurements themselves are `sensorium.recipes.tactile.metrics` (the task's validation uses
them too); the test pass that runs them is `TactileTask`'s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


# --- CLI ----------------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from sensorium.engine.demo import test_untrained
    from sensorium.eval.checkpoint import eval_parser, test_checkpoint

    parser = eval_parser("sensorium eval tactile", __doc__)
    parser.add_argument("--untrained", action="store_true",
                        help="also evaluate the same config at initialisation -> eval/tactile_untrained.json")
    args, overrides = parser.parse_known_args(argv)
    cli = test_checkpoint(args.ckpt, args.config, overrides)
    eval_dir = cli.run_dir / "eval"
    print(f"[eval] wrote {eval_dir / 'tactile.json'}")
    if args.untrained:
        with tempfile.TemporaryDirectory() as tmp:
            test_untrained(cli, Path(tmp))
            shutil.copyfile(Path(tmp) / "eval" / "tactile.json", eval_dir / "tactile_untrained.json")
        print(f"[eval] wrote {eval_dir / 'tactile_untrained.json'}")
    return 0
