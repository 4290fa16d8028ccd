"""How hard frame 4 is, without a model: simple predictors of frame 4 from frames 1-3, scored as the
demo scores the model (MSE against copying frame 3, in the loss's space: per-patch normalised
targets of the ImageNet-normalised frames), on sliding and pressed-in-place contacts apart.

    python benchmarks/tactile_frame4_predictors.py DATA [--split val] [--image-size 64]

DATA: a `sensorium synth tactile` root (its frame labels say which contacts slide). Predictors:
copying frame 3 (1 by definition), the mean of frames 2 and 3 and of frames 1-3 (what averaging the
sensor noise away would gain), and linear extrapolation 2 x frame 3 - frame 2. The split defaults
to val: this is for choosing, and nothing here is tuned on test.
"""

from __future__ import annotations

import argparse

import torch

from sensorium.layers.patch_embed import patchify
from sensorium.recipes.tactile.datamodule import TactileDataModule
from sensorium.recipes.tactile.model import target_space
from sensorium.recipes.tactile.transforms import TactileAugment

PATCH = 8


def predictors(frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalised frames (B, 4, 3, S, S) -> frame 4's target (B, L, P) and each predictor's (B, L, P)."""
    B = frames.shape[0]
    patches = patchify(frames.flatten(0, 1), PATCH).view(B, 4, -1, 3 * PATCH * PATCH)
    f1, f2, f3, f4 = (target_space(patches[:, i], True) for i in range(4))
    return f4, {"copy frame 3": f3, "mean of frames 2, 3": (f2 + f3) / 2, "mean of frames 1-3": (f1 + f2 + f3) / 3,
                "2 x frame 3 - frame 2": 2 * f3 - f2}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    datamodule = TactileDataModule(root=args.data, layout="tacquad", labels_csv="labels.csv",
                                   image_size=args.image_size, batch_size=64, num_workers=0)
    datamodule.setup("test" if args.split == "test" else "fit")
    loader = (datamodule.test_dataloader() if args.split == "test" else datamodule.val_dataloader())[0]
    normalise = TactileAugment(args.image_size).eval()
    errors: dict[str, dict[str, float]] = {}
    for batch in loader:
        target, predicted = predictors(normalise(batch["frames"].float()))
        slip = batch["slip"].flatten()
        for name, prediction in predicted.items():
            se = (prediction - target).pow(2).sum(dim=(1, 2))  # (B,)
            for motion, chosen in (("sliding", slip == 1), ("pressed in place", slip == 0)):
                errors.setdefault(name, {}).setdefault(motion, 0.0)
                errors[name][motion] += float(se[chosen].sum())
    copy = errors["copy frame 3"]
    ratios = {name: {m: e / max(copy[m], 1e-12) for m, e in by_motion.items()} for name, by_motion in errors.items()}
    print(f"frame-4 MSE / copy-frame-3 MSE on {args.split} windows of {args.data}")
    print(f"{'predictor':24s} {'sliding':>8s} {'pressed in place':>17s}")
    for name, by_motion in ratios.items():
        print(f"{name:24s} {by_motion['sliding']:8.3f} {by_motion['pressed in place']:17.3f}")
    return ratios


if __name__ == "__main__":
    main()
