"""The evaluation's user-identification classifier: a small CNN trained from scratch on spectrograms
(real, real + classic augmentation, real + generated, generated only), with a fixed number of
optimiser steps so that every training condition costs the same.

    (B, C, H, W) in [0, 1] -> ConvStem (stride 2 per stage) -> global mean pool -> features (B, D)
                           -> dropout -> linear -> logits (B, users)

Batches are drawn with replacement; with a second (`extra`) set, each batch takes `extra_fraction`
of its samples from it, so a few real recordings are not drowned by many generated ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.engine.optim import warmup_cosine
from sensorium.engine.precision import bf16_autocast
from sensorium.layers.conv import ConvStem
from sensorium.recipes.doppler.reader import to_signed, to_unit
from sensorium.recipes.doppler.transforms import ClassicAugmentConfig, classic_augment, random_blur


@dataclass
class ClassifierConfig:
    widths: tuple[int, ...] = (16, 32, 64)
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    dropout: float = 0.2
    extra_fraction: float = 0.5
    """Share of each batch drawn from the extra (e.g. generated) set when there is one."""
    blur_sigma: float = 0.0
    """Blur every training image by a random Gaussian of sigma up to this (pixels); 0: off. The
    evaluator uses it (see `transforms.random_blur`), the classifiers under test do not."""


class SpectrogramClassifier(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64),
                 dropout: float = 0.2):
        super().__init__()
        self.stem = ConvStem(in_channels, tuple(widths))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.stem.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(to_signed(x)).mean(dim=(2, 3))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def train_classifier(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, config: ClassifierConfig,
                     seed: int = 0, augment: ClassicAugmentConfig | None = None,
                     extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> SpectrogramClassifier:
    """A classifier trained on uint8 images (N, C, H, W) with labels (N,) (plus `extra` images and
    labels), `config.steps` AdamW steps with a 10% linear warmup then cosine decay, bf16 autocast on CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = SpectrogramClassifier(pixels.shape[1], num_classes, config.widths, config.dropout)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup = max(1, config.steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, config.steps, 1.0, 0.01))
        has_extra = extra is not None and len(extra[0]) > 0
        n_extra = round(config.batch_size * config.extra_fraction) if has_extra else 0
        model.train()
        for _ in range(config.steps):
            index = torch.randint(0, len(pixels), (config.batch_size - n_extra,), generator=generator)
            x, y = pixels[index], labels[index]
            if n_extra:
                more = torch.randint(0, len(extra[0]), (n_extra,), generator=generator)
                x, y = torch.cat([x, extra[0][more]]), torch.cat([y, extra[1][more]])
            x = to_unit(x)
            target = F.one_hot(y, num_classes).float()
            if config.blur_sigma > 0:
                x = random_blur(x, config.blur_sigma, generator)
            if augment is not None:
                x, target = classic_augment(x, target, augment, generator)
            with bf16_autocast("cpu"):
                loss = torch.sum(-target * F.log_softmax(model(x).float(), dim=1), dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def predict(model: SpectrogramClassifier, pixels: torch.Tensor,
            batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) -> predicted labels (N,) and pooled features (N, D) (float32)."""
    model.eval()
    preds, feats = [], []
    for x in pixels.split(batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = model.features(to_unit(x))
            logits = model.head(f)
        preds.append(logits.float().argmax(1))
        feats.append(f.float())
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, model.head.in_features)
    return torch.cat(preds), torch.cat(feats)
