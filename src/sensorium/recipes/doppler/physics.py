"""Gait parameters measured back from spectrogram images, to check generated spectrograms against
the simulation's ground truth (`users.csv` of `sensorium synth doppler`).

- torso Doppler: the torso is the strongest scatterer, so the Doppler of each frame's strongest row
  (outside a +-60 Hz clutter notch), medianed over frames;
- gait-cycle frequency: the limbs' energy (rows above 1.6 x the torso Doppler, where the swinging
  legs and feet are) rises once per step; its autocorrelation peaks at the step period (looked for
  between 0.3 and 0.9 s, refined by a parabola through the peak), and a cycle is two steps.

The images' axes come from the synthetic dataset's synth.json (`doppler_axis_hz`, the recording's
duration over the frames: `spectrogram_axes`); `gait_per_user` gives each user's medians, which the
evaluation compares with users.csv (`correlation` across users).
"""

from __future__ import annotations

import numpy as np
import torch


def gait_from_spectrograms(pixels: torch.Tensor, doppler_hz: np.ndarray, frame_s: float,
                           dynamic_range_db: float = 40.0,
                           notch_hz: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grayscale images (N, 1, H, W) (rows = `doppler_hz`, top first) -> torso Doppler (N,) in Hz
    and gait-cycle frequency (N,) in Hz (NaN where no period is found)."""
    db = pixels[:, 0].double().numpy() / 255.0 * dynamic_range_db - dynamic_range_db  # (N, H, W)
    power = 10 ** (db / 10)
    freqs = np.asarray(doppler_hz, dtype=np.float64)
    outside = np.abs(freqs) > notch_hz
    strongest = np.where(outside[None, :, None], power, 0.0).argmax(axis=1)  # (N, W) row per frame
    torso = np.median(freqs[strongest], axis=1)  # (N,)
    limbs = (freqs[None, :] > 1.6 * torso[:, None])  # (N, H) rows of the forward-swinging limbs
    energy = np.einsum("nhw,nh->nw", power, limbs.astype(np.float64))  # (N, W)
    energy = energy - energy.mean(axis=1, keepdims=True)
    W = energy.shape[1]
    spectrum = np.fft.rfft(energy, n=2 * W, axis=1)
    autocorr = np.fft.irfft(spectrum * np.conj(spectrum), axis=1)[:, :W]  # (N, W) lags 0..W-1
    lags = np.arange(W) * frame_s
    window = np.flatnonzero((lags >= 0.3) & (lags <= 0.9))
    cycle = np.full(len(torso), np.nan)
    if len(window) < 3:
        return torso, cycle
    k = window[np.argmax(autocorr[:, window], axis=1)]  # (N,) lag of the peak
    interior = (k > window[0]) & (k < window[-1])  # a peak on the window's edge is no period
    rows = np.arange(len(k))
    a, b, c = (autocorr[rows, np.clip(k + d, 0, W - 1)] for d in (-1, 0, 1))
    denominator = a - 2 * b + c
    offset = np.where(denominator != 0, 0.5 * (a - c) / np.where(denominator != 0, denominator, 1.0), 0.0)
    cycle[interior] = 1.0 / (2 * (k + offset)[interior] * frame_s)
    return torso, cycle


def per_user_median(values: np.ndarray, labels: np.ndarray, num_users: int) -> np.ndarray:
    """(num_users,) median of each user's values, ignoring NaN (NaN when a user has none)."""
    out = np.full(num_users, np.nan)
    for u in range(num_users):
        chosen = values[(labels == u) & np.isfinite(values)]
        if len(chosen):
            out[u] = float(np.median(chosen))
    return out


def spectrogram_axes(synth_info: dict) -> tuple[np.ndarray, float]:
    """synth.json's content -> the images' Doppler axis in Hz (top row first) and the seconds between
    two columns (STFT frames)."""
    radar = synth_info["radar"]
    samples = radar["duration_s"] * radar["prf_hz"]
    frame_s = (samples - radar["window"]) / (radar["frames"] - 1) / radar["prf_hz"]  # between STFT frames
    return np.asarray(synth_info["doppler_axis_hz"]), frame_s


def gait_per_user(pixels: torch.Tensor, labels: torch.Tensor, num_users: int, doppler_hz: np.ndarray,
                  frame_s: float, dynamic_range_db: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grayscale images (N, 1, H, W) of users `labels` (N,) -> each user's median torso Doppler
    and gait-cycle frequency, (num_users,) each in Hz (NaN for a user without a measurement)."""
    torso, cycle = gait_from_spectrograms(pixels, doppler_hz, frame_s, dynamic_range_db)
    labels = labels.numpy()
    return per_user_median(torso, labels, num_users), per_user_median(cycle, labels, num_users)


def correlation(values: np.ndarray, truth: np.ndarray) -> float | None:
    """Pearson correlation of measured values with the true ones; None when a value is missing."""
    return float(np.corrcoef(values, truth)[0, 1]) if np.isfinite(values).all() else None
