"""The doppler recipe's own metrics: the VAE's validation metric (below the task that picks best.ckpt
by it; `sensorium eval doppler` reports it on reconstructions too), and the augmentation gain per user.

**Augmentation gain per user** (the augmentation papers' per-user table): for one training seed, a
user's gain is the accuracy of the augmented classifier on that user's TEST images (the share
labelled as that user) minus the accuracy of the real-only classifier on the same images, the same
difference `aug_gain` takes over all TEST images. The evaluation averages it over the seeds. The
overall gain is the per-user gains weighted by each user's TEST images (the plain mean when every
user has as many).
"""

from __future__ import annotations

import torch

from sensorium.eval.generation import class_accuracy


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1]."""
    mse = (x.float() - y.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def gain_per_user(pred: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor,
                  num_users: int) -> list[float | None]:
    """Per user u (label index): accuracy of `pred` on the samples of u minus that of `reference`
    (both (N,) predicted labels of the same samples, `labels` (N,)); None where u has no sample."""
    ours = class_accuracy(pred, labels, num_users)["per_class"]
    theirs = class_accuracy(reference, labels, num_users)["per_class"]
    return [None if a is None else a - b for a, b in zip(ours, theirs)]
