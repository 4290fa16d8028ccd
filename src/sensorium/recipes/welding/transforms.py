"""Training-time augmentation of welding batches, on the batch's device, vectorised over samples.

Each transform leaves the class signatures intact and varies only what the recording setup varies:
- video: a horizontal flip of the whole clip (the torch may travel either way; sparks fly upwards,
  so no vertical flip), the same for every frame (kornia VideoSequential, same_on_frame);
- images: independent horizontal/vertical flips and a small contrast change per photo (each angle
  is its own photograph; the bead's orientation already varies);
- audio: SpecAugment time and frequency masks (Park et al. 2019), so no single band or moment
  carries the embedding;
- sensor: a small per-channel gain and additive noise on the standardised series.
Brightness is left alone: an arc that is dim or bright is itself a signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class WeldingAugmentConfig:
    enabled: bool = False
    """Off by default: on the synthetic demo data it cost accuracy (TEST k-NN 0.76 with, 0.85 without,
    60 epochs): the demo's signatures are small and few samples cannot teach invariance to the
    transforms. Real recordings, with more runs and more nuisance, are where to try it."""
    flip: float = 0.5
    """Probability of each flip."""
    image_contrast: float = 0.15
    spec_time_mask: int = 8
    """Maximum width (frames) of one SpecAugment time mask; 0 disables."""
    spec_freq_mask: int = 4
    """Maximum width (mel bins) of one SpecAugment frequency mask; 0 disables."""
    sensor_gain: float = 0.05
    sensor_noise: float = 0.05


def _band_mask(batch: int, length: int, max_width: int, device) -> torch.Tensor:
    """(B, length) bool: one random band of width in [0, max_width] per sample."""
    width = torch.randint(0, max_width + 1, (batch, 1), device=device)
    start = (torch.rand(batch, 1, device=device) * (length - width + 1)).floor()
    position = torch.arange(length, device=device)[None, :]
    return (position >= start) & (position < start + width)


class WeldingAugment(nn.Module):
    def __init__(self, config: WeldingAugmentConfig | None = None):
        super().__init__()
        import kornia.augmentation as K

        self.config = c = config or WeldingAugmentConfig()
        self.video = K.VideoSequential(K.RandomHorizontalFlip(p=c.flip), data_format="BTCHW", same_on_frame=True)
        self.images = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=c.flip), K.RandomVerticalFlip(p=c.flip),
            K.ColorJitter(contrast=c.image_contrast, p=1.0) if c.image_contrast > 0 else nn.Identity())

    def raw_modalities(self) -> tuple[str, ...]:
        """The modalities whose raw input this augmentation changes (none when disabled). A batch
        that carries a modality's cached encoder output instead of its input cannot be augmented
        there."""
        c = self.config
        if not c.enabled:
            return ()
        active = {"video": c.flip > 0, "images": c.flip > 0 or c.image_contrast > 0,
                  "audio": c.spec_time_mask > 0 or c.spec_freq_mask > 0,
                  "sensor": c.sensor_gain > 0 or c.sensor_noise > 0}
        return tuple(m for m, on in active.items() if on)

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Augments the raw modalities the batch holds (a modality read from a feature cache holds
        `<m>_tokens` instead and is left alone; the task refuses a cache under an augmentation
        that would change it)."""
        if not self.config.enabled:
            return batch
        c = self.config
        out = dict(batch)
        if "video" in batch:
            out["video"] = self.video(batch["video"])
        if "images" in batch:  # each photo on its own
            out["images"] = self.images(batch["images"].flatten(0, 1)).view_as(batch["images"])
        if "audio" in batch:
            audio = batch["audio"]  # (B, 1, mels, frames)
            B = audio.shape[0]
            floor = audio.amin(dim=(2, 3), keepdim=True)  # masked cells become silence, not zeros
            if c.spec_time_mask:
                time = _band_mask(B, audio.shape[3], c.spec_time_mask, audio.device)[:, None, None, :]
                audio = torch.where(time, floor, audio)
            if c.spec_freq_mask:
                freq = _band_mask(B, audio.shape[2], c.spec_freq_mask, audio.device)[:, None, :, None]
                audio = torch.where(freq, floor, audio)
            out["audio"] = audio
        sensor = batch["sensor"]  # (B, L, C)
        gain = 1 + c.sensor_gain * torch.randn(sensor.shape[0], 1, sensor.shape[2], device=sensor.device)
        out["sensor"] = sensor * gain + c.sensor_noise * torch.randn_like(sensor)
        return out
