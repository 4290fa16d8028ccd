"""How hard is the synthetic doppler data? Users must be distinguishable, but not trivially.

    python benchmarks/doppler_separability.py [--users 16] [--per-user 80] [--seed 0] [--keep DIR]

Generates the demo's dataset (`sensorium synth doppler`), prepares it (20% val per user) and prints
val accuracies of:
  (a) a logistic regression on the raw pixels (what separates users without learning features;
      should be far from perfect);
  (b) the evaluation's small CNN (`sensorium.recipes.doppler.classifier`) trained on all of TRAIN,
      on val as it is and blurred by 1 px, with and without the evaluator's random-blur training;
  (c) the same CNN with 10 recordings per user, without augmentation, with a time shift only, and
      with the full classic augmentation (how much headroom the augmentation gain has).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from sensorium.recipes.doppler.classifier import ClassifierConfig, predict, train_classifier
from sensorium.recipes.doppler.evaluate import take_per_user
from sensorium.recipes.doppler.prepare import prepare
from sensorium.recipes.doppler.reader import RealSpectrograms
from sensorium.recipes.doppler.synth import generate
from sensorium.recipes.doppler.transforms import ClassicAugmentConfig


def accuracy(model, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, pixels)[0] == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--per-user", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        generate(root / "raw", users=args.users, per_user=args.per_user, seed=args.seed)
        print(f"synth: {args.users} users x {args.per_user} recordings in {time.perf_counter() - start:.1f} s")
        prepare(root / "raw", root / "prep", val_ratio=0.2, seed=args.seed)
        real = RealSpectrograms(root / "prep", 64, 1)
    train_x, train_y = real.pixels["train"], real.labels["train"]
    val_x, val_y = real.pixels["val"], real.labels["val"]
    n = args.users

    pixels = LogisticRegression(C=0.01, max_iter=500).fit(train_x.flatten(1).float().numpy() / 255, train_y.numpy())
    score = (pixels.predict(val_x.flatten(1).float().numpy() / 255) == val_y.numpy()).mean()
    print(f"(a) logistic regression on raw pixels: {score:.3f} (chance {1 / n:.3f})")

    k = torch.arange(-4, 5, dtype=torch.float32)
    kernel = torch.exp(-k**2 / 2)
    kernel = kernel / kernel.sum()
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(val_x.float(), (4, 4, 4, 4), mode="replicate"),
                                         (kernel[:, None] * kernel[None, :])[None, None]).round().to(torch.uint8)
    for name, config in (("sharp", ClassifierConfig()), ("random blur", ClassifierConfig(blur_sigma=2.0))):
        model = train_classifier(train_x, train_y, n, config, args.seed)
        print(f"(b) CNN, all TRAIN, {name} training: val {accuracy(model, val_x, val_y):.3f}, "
              f"val blurred by 1 px {accuracy(model, blurred, val_y):.3f}")

    subset = take_per_user(train_y, {u: 10 for u in range(n)}, args.seed)
    for name, augment in (("none", None), ("time shift", ClassicAugmentConfig(crop=1.0, time_mask=0, freq_mask=0,
                                                                              mixup=0.0)),
                          ("classic", ClassicAugmentConfig())):
        model = train_classifier(train_x[subset], train_y[subset], n, ClassifierConfig(steps=200), args.seed,
                                 augment=augment)
        print(f"(c) CNN, 10 recordings per user, augmentation {name}: val {accuracy(model, val_x, val_y):.3f}")


if __name__ == "__main__":
    main()
