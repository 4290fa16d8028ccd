"""Synthetic welding runs in the Intel Robotic Welding Multimodal Dataset layout.

    sensorium synth welding --out DIR [--seed S] [--samples-per-class N] [--test-fraction F]

writes DIR/manifest.csv (the published columns: CATEGORY, WELD_TYPE, THICKNESS_MM, STEEL_TYPE,
SAMPLES, CURRENT_A, VOLTAGE_V, GAS_BAR, ROBOT_SPEED_CPM, DIRECTORY, SUBDIRS, SPLIT) and, per run,
DIR/<session>/<run_id>/ with <run_id>.avi (MPEG-4 part 2, as PyAV writes it), <run_id>.flac,
<run_id>.csv (the published header: Date, Time, Part No, Pressure, CO2 Weld Flow, Feed, Primary Weld
Current, Wire Consumed, Secondary Weld Voltage, Remarks) and images/view_<k>.jpg.

Each class has a physical signature spread over the four modalities (SIGNATURES). The table is
built so that no single modality separates all 12 classes (video shows 6 distinct signatures,
images 8, audio 6, sensor 9) while the four together do (the 4-tuples are unique). Every modality
also carries nuisance variation that does not depend on the class: exposure, colour temperature,
plate texture, bead position and orientation, weld speed (a time warp of video, audio and sensor),
set-points, background noise and interfering tones, and a random strength and count for each
signature (2-6 pores of random size, 4-14 sparks a frame, ...). Raw pixels and samples are therefore
not trivially separable, while a small CNN can learn each signature.

Every run draws from its own generator seeded by (seed, label, index): output is deterministic for
a seed and does not depend on generation order.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.signal import lfilter

from sensorium.errors import ConfigError
from sensorium.recipes.welding.reader import SENSOR_COLUMNS, WELDING_LABELS

# --- the class signatures ------------------------------------------------------------------------


class Signature(NamedTuple):
    video: str
    images: str
    audio: str
    sensor: str


# One row per class; a modality's distinct values are its groups (video 6, images 8, audio 6,
# sensor 9). Excessive_Convexity and Overlap share one "tall bead" rendering on purpose: in the
# photos they are one group, and only the sensor (low voltage vs high wire feed) tells them apart.
SIGNATURES: dict[str, Signature] = {
    "Good": Signature("calm", "normal", "steady", "nominal"),
    "Excessive_Convexity": Signature("calm", "tall", "steady", "low_voltage"),
    "Undercut": Signature("calm", "grooves", "hiss", "high_voltage"),
    "Lack_of_Fusion": Signature("dim", "normal", "weak", "low_current"),
    "Porosity_w_Excessive_Penetration": Signature("flicker", "pores", "crackle", "gas_drop_high_current"),
    "Porosity": Signature("flicker", "pores", "crackle", "gas_drop"),
    "Spatter": Signature("sparks", "droplets", "crackle", "nominal"),
    "Burnthrough": Signature("flash", "burn_hole", "pop", "high_current"),
    "Excessive_Penetration": Signature("bright", "normal", "steady", "high_current"),
    "Crater_Cracks": Signature("calm", "cracks", "abrupt_stop", "abrupt_stop"),
    "Warping": Signature("calm", "warped", "steady", "nominal"),
    "Overlap": Signature("calm", "tall", "steady", "high_feed"),
}
assert tuple(SIGNATURES) == WELDING_LABELS

# Two-digit class codes that end each run id (<MM-DD-YY>-<serial>-<code>). Published: 00 good,
# 01 excessive penetration, 02 burn-through, 05 undercut, 06 overlap, 07 lack of fusion,
# 08 excessive convexity, 11 crater cracks; the other four are not published in the sources we
# found, and 03, 04, 09, 10 stand in for them.
CLASS_CODES = {
    "Good": 0, "Excessive_Penetration": 1, "Burnthrough": 2, "Porosity_w_Excessive_Penetration": 3,
    "Porosity": 4, "Undercut": 5, "Overlap": 6, "Lack_of_Fusion": 7, "Excessive_Convexity": 8,
    "Spatter": 9, "Warping": 10, "Crater_Cracks": 11,
}
MANIFEST_COLUMNS = ("CATEGORY", "WELD_TYPE", "THICKNESS_MM", "STEEL_TYPE", "SAMPLES", "CURRENT_A",
                    "VOLTAGE_V", "GAS_BAR", "ROBOT_SPEED_CPM", "DIRECTORY", "SUBDIRS", "SPLIT")
CSV_HEADER = ("Date", "Time", "Part No", *SENSOR_COLUMNS, "Remarks")
RUNS_PER_SESSION = 10


@dataclass
class SynthSizes:
    """Stored sizes: small, so the demo scale writes in seconds; the reader resizes."""

    video_size: int = 64
    video_frames: int = 20
    fps: int = 10
    image_size: int = 64
    num_images: int = 5
    audio_rate: int = 16000
    audio_seconds: float = 1.6
    video_format: str = "avi"  # or "mp4"


class Nuisance(NamedTuple):
    """What varies between runs regardless of class; drawn once per run, shared by the modalities."""

    speed: float  # relative weld speed in [0, 1]: faster -> shorter arc, faster torch
    exposure: float
    tint: np.ndarray  # (3,) colour-temperature gains


# --- small numpy helpers -------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) smooth random field, about unit std: bicubic upsampling of a cells^2 grid."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()


def _blobs(xx: np.ndarray, yy: np.ndarray, cx: np.ndarray, cy: np.ndarray, sigma: np.ndarray | float,
           amp: np.ndarray) -> np.ndarray:
    """Sum of Gaussian blobs. xx, yy: (..., H, W) grids; cx, cy, amp (and sigma): (..., K) -> (..., H, W)."""
    sigma = np.broadcast_to(sigma, np.shape(cx))
    d2 = (xx[..., None, :, :] - cx[..., None, None]) ** 2 + (yy[..., None, :, :] - cy[..., None, None]) ** 2
    return (amp[..., None, None] * np.exp(-d2 / (2 * sigma[..., None, None] ** 2))).sum(axis=-3)


def _signature_rng(rng: np.random.Generator) -> np.random.Generator:
    """A child generator for the class signature's own draws, so the nuisance drawn from `rng`
    (plate, lighting, timing, noise) is the same whatever the class: same state, same scene."""
    return np.random.default_rng(rng.integers(1 << 62))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _band_noise(rng: np.random.Generator, n: int, rate: int, lo: float, hi: float) -> np.ndarray:
    """Unit-RMS noise band-limited to [lo, hi] Hz (raised-cosine edges), shaped in the FFT domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    edge = 0.15 * (hi - lo)
    mask = np.clip(np.minimum(f - lo + edge, hi + edge - f) / (2 * edge), 0, 1)
    x = np.fft.irfft(spectrum * np.sin(0.5 * np.pi * mask) ** 2, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


# --- video: the arc seen by the process camera -----------------------------------------------------


def render_video(rng: np.random.Generator, kind: str, nz: Nuisance, frames: int, size: int) -> np.ndarray:
    """(T, S, S, 3) uint8: a plate, the hot bead trail and the arc moving along the weld line."""
    T, S = frames, size
    sig = _signature_rng(rng)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    scale = S / 64.0  # the geometry below is laid out for 64 px
    plate = rng.uniform(0.10, 0.22) * (1 + 0.35 * _smooth_field(rng, S, 5))  # (S, S) float32

    # The weld line and the torch: weld speed sets how far the arc travels in the clip.
    angle = rng.uniform(-0.25, 0.25)
    y_mid = S / 2 + rng.uniform(-10, 10) * scale
    step = (0.8 + 1.2 * nz.speed) * scale  # px per frame
    x_arc = (rng.uniform(4, 14) * scale + step * np.arange(T)).astype(np.float32)  # (T,)
    y_arc = y_mid + math.tan(angle) * (x_arc - S / 2)
    across = (yy - y_mid - math.tan(angle) * (xx - S / 2)) * math.cos(angle)  # (S, S) distance to the line
    behind = x_arc[:, None, None] - xx  # (T, S, S)
    trail = np.exp(-np.maximum(behind, 0) / (rng.uniform(6, 14) * scale)) * (behind > 0)
    trail = trail * np.exp(-(across / (2.5 * scale)) ** 2)  # (T, S, S): hot metal cooling behind the arc

    # The arc: intensity per frame and radius carry the signature.
    radius = rng.uniform(2.6, 3.6) * scale
    intensity = 1.0 + 0.04 * rng.standard_normal(T, dtype=np.float32)
    halo = 0.0
    if kind == "dim":
        intensity, radius = 0.35 * intensity, 0.8 * radius
    elif kind == "bright":
        intensity, radius, halo = 1.3 * intensity, 1.8 * radius, sig.uniform(0.25, 0.4)
    elif kind == "flicker":  # random frames drop to a fraction of the arc
        dips = sig.random(T) < sig.uniform(0.4, 0.6)
        intensity = np.where(dips, sig.uniform(0.08, 0.35, T), sig.uniform(0.85, 1.1, T))
    r2 = (xx - x_arc[:, None, None]) ** 2 + (yy - y_arc[:, None, None]) ** 2  # (T, S, S)
    arc = intensity[:, None, None] * np.exp(-r2 / (2 * radius**2))
    glow = halo * np.exp(-r2 / (2 * (3.5 * radius) ** 2)) if halo else np.zeros_like(arc)

    extra = np.zeros_like(arc)
    if kind == "sparks":  # bright droplets flying out of the arc, a new set each frame
        k = 14
        count = sig.integers(4, k + 1, size=T)  # (T,)
        dist = sig.uniform(5, 24, (T, k)) * scale
        theta = sig.uniform(-np.pi, 0.3, (T, k))  # mostly upwards, some sideways
        amp = sig.uniform(0.9, 1.3, (T, k)) * (np.arange(k) < count[:, None])
        extra = _blobs(xx, yy, x_arc[:, None] + dist * np.cos(theta), y_arc[:, None] + dist * np.sin(theta),
                       0.9 * scale, amp)
    elif kind == "flash":  # burn-through: a large glowing blob for a few frames
        length = max(2, int(round(T * sig.uniform(0.25, 0.35))))  # long enough for 8 of 20 frames to catch it
        start = int(sig.integers(T // 5, max(T // 5 + 1, T - length - T // 8 + 1)))
        on = np.zeros(T)
        on[start:start + length] = sig.uniform(1.4, 1.8)
        extra = on[:, None, None] * np.exp(-r2 / (2 * (sig.uniform(2.6, 3.2) * radius) ** 2))

    layers = np.stack(np.broadcast_arrays(plate, trail, arc, glow, extra), axis=-1)  # (T, S, S, 5)
    colours = np.array([[1.0, 1.0, 1.0],  # plate
                        [0.6, 0.33, 0.12],  # cooling bead: orange
                        [1.0, 0.97, 0.9],  # arc: white
                        [1.0, 0.8, 0.5],  # halo
                        [1.0, 0.9, 0.6]], np.float32)  # sparks, flash: yellow-white
    rgb = (layers @ colours) * (nz.exposure * nz.tint).astype(np.float32)  # (T, S, S, 3)
    rgb += rng.uniform(0.01, 0.03) * rng.standard_normal(rgb.shape, dtype=np.float32)
    return _to_uint8(rgb)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """(T, H, W, 3) uint8 -> MPEG-4 part 2 in an AVI (or MP4) container."""
    with av.open(str(path), "w", format=path.suffix.lstrip(".")) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "3", "g": "10"}  # near-transparent quality: sparks must survive
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# --- images: the finished weld from several angles -------------------------------------------------


def render_images(rng: np.random.Generator, kind: str, nz: Nuisance, views: int, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8: one plate and bead, photographed from N angles.

    Everything physical (bead, defects, plate texture) lives in plate coordinates (u along the
    bead, v across, in 64-px units); each view maps its pixels to plate coordinates with its own
    rotation, scale and shift, and lights the height map from its own direction.
    """
    N, S = views, size
    sig = _signature_rng(rng)
    # Views: rotation, scale, shift of pixels -> plate coordinates.
    theta = rng.uniform(-0.45, 0.45) + np.linspace(-0.3, 0.3, N) + rng.normal(0, 0.05, N)
    scale = rng.uniform(0.9, 1.1, N) * 64.0 / S
    shift = rng.uniform(-4, 4, (N, 2)) + np.array([0.0, rng.uniform(-8, 8)])
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) - (S - 1) / 2
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (c * xx + s * yy) * scale[:, None, None] - shift[:, 0, None, None]  # (N, S, S)
    v = (-s * xx + c * yy) * scale[:, None, None] - shift[:, 1, None, None]

    # The bead: a capsule from u0 to u1 (its crater end is visible), parabolic cross-section.
    half = rng.uniform(4.5, 6.0)
    height = half * rng.uniform(0.45, 0.6)
    if kind == "tall":
        half, height = half * 0.7, half * 1.3
    u0, u1 = -40.0, rng.uniform(8, 22)
    bend = sig.choice([-1, 1]) * sig.uniform(0.009, 0.014) if kind == "warped" else 0.0
    dv = v - bend * u**2  # a warped plate bends the bead with it
    du = np.where(u > u1, u - u1, np.where(u < u0, u - u0, 0.0))
    d2 = (du**2 + dv**2) / half**2
    h = height * np.maximum(0, 1 - d2)  # (N, S, S) height map
    on_bead = d2 < 1
    crater = ((u - u1 + 0.3 * half) ** 2 + dv**2) / (0.8 * half) ** 2
    h -= 0.5 * height * np.maximum(0, 1 - crater)

    # Albedo: textured plate, rippled bead (ripples are tilted chevrons).
    waves = rng.normal(0, 1, (5, 3))
    texture = sum(0.02 * np.sin((u * w[0] + v * w[1]) * 0.35 + 6 * w[2]) for w in waves)
    albedo = rng.uniform(0.45, 0.62) * (1 + texture)
    ripple = 0.07 * np.sin(2 * np.pi * (u - 0.6 * np.abs(dv)) / rng.uniform(2.6, 3.6))
    albedo = np.where(on_bead, albedo * rng.uniform(0.75, 0.9) * (1 + ripple), albedo)

    if kind == "grooves":  # undercut: dark trenches along both toes, in segments
        toe = np.abs(np.abs(dv) - half - 0.8)
        segments = np.sin(u * sig.uniform(0.08, 0.15) + sig.uniform(0, 6)) > -0.6
        groove = np.exp(-(toe / 0.7) ** 2) * segments * (u < u1)
        h -= 0.8 * groove
        albedo *= 1 - 0.7 * groove
    elif kind == "pores":  # 2-6 gas pores of random size on the bead
        k = int(sig.integers(2, 7))
        pu, pv = sig.uniform(-28, u1 - 4, k), sig.uniform(-0.5, 0.5, k) * half
        radius = sig.uniform(1.3, 2.6, k)
        rho = np.sqrt((u[..., None] - pu) ** 2 + (dv[..., None] - pv) ** 2) / radius  # (N, S, S, k)
        pit = np.maximum(0, 1 - rho**2).max(axis=-1)
        h -= 1.5 * pit
        albedo *= 1 - 0.85 * np.clip(pit * 3, 0, 1)
    elif kind == "droplets":  # spatter: bright metal beads scattered beside the weld
        k = int(sig.integers(10, 26))
        pu = sig.uniform(-32, 32, k)
        pv = sig.choice([-1, 1], k) * (half + sig.uniform(1.5, 14, k))
        radius = sig.uniform(0.8, 1.6, k)
        rho = np.sqrt((u[..., None] - pu) ** 2 + (v[..., None] - pv) ** 2) / radius
        bump = np.sqrt(np.maximum(0, 1 - rho**2)).max(axis=-1)
        h += 1.2 * bump
        albedo = np.where(bump > 0, 0.9, albedo)
    elif kind == "burn_hole":  # a ragged hole through the plate, heat tint around it
        pu, pv = sig.uniform(-24, u1 - 6), sig.uniform(-1, 1)
        r0 = sig.uniform(3.5, 6.0)
        phi = np.arctan2(dv - pv, u - pu)
        rho = np.sqrt((u - pu) ** 2 + (dv - pv) ** 2) / (r0 * (1 + 0.2 * np.sin(3 * phi + sig.uniform(0, 6))))
        albedo = np.where(rho < 1, 0.03, albedo * (1 - 0.45 * np.exp(-((rho - 1) / 0.5) ** 2)))
        h = np.where(rho < 1, 0.0, h)
    elif kind == "cracks":  # 2-4 jagged cracks radiating from the crater
        k = int(sig.integers(2, 5))
        start = np.array([u1 - 0.3 * half, 0.0])
        crack = np.zeros_like(u)
        for j in range(k):  # k <= 4 polylines of 3 segments; each evaluated on all pixels at once
            heading = sig.uniform(0, 2 * np.pi)
            points = [start]
            for _ in range(3):
                heading += sig.normal(0, 0.5)
                direction = np.array([np.cos(heading), np.sin(heading)])
                points.append(points[-1] + sig.uniform(2.5, 4.0) * direction)
            for a, b in zip(points[:-1], points[1:]):
                crack = np.maximum(crack, np.exp(-(_segment_distance(u, dv, a, b) / 0.7) ** 2))
        h -= 0.6 * crack
        albedo *= 1 - 0.85 * crack
    shade_gain = 1.0
    if kind == "warped":  # the bent plate turns away from the light: a strong shading gradient
        shade_gain = 1 + sig.choice([-1, 1]) * sig.uniform(0.35, 0.5) * np.tanh(u / 14)

    # The plate's far edge: straight and sometimes in view for flat plates, curved into view when warped.
    side, straight, seen = rng.choice([-1, 1]), rng.uniform(16, 30), rng.random() < 0.6
    edge = straight if seen else 1e9
    if kind == "warped":
        edge = sig.uniform(22, 28) - sig.uniform(0.012, 0.02) * u**2
    background = side * v > edge

    # Lambert shading of the height map; flat plate = 1.
    gy, gx = np.gradient(h / scale[:, None, None], axis=(1, 2))
    azimuth = rng.uniform(0, 2 * np.pi, N)[:, None, None]
    elevation = rng.uniform(0.6, 0.95)
    light = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth),
                                         np.cos(elevation) * np.sin(azimuth),
                                         np.full_like(azimuth, np.sin(elevation))), axis=-1)  # (N, 1, 1, 3)
    normal = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    lambert = np.maximum(0, (normal * light).sum(-1)) / np.sin(elevation)
    shade = (0.35 + 0.65 * lambert) * shade_gain
    halfway = light + np.array([0.0, 0.0, 1.0])  # Blinn highlight, camera overhead
    halfway = halfway / np.linalg.norm(halfway, axis=-1, keepdims=True)
    gloss = 0.5 * np.maximum(0, (normal * halfway).sum(-1)) ** 30 * (h > 0.3)

    # Nuisance light: exposure, colour temperature, a mild gradient across each photo.
    tilt = rng.normal(0, 0.06, (N, 2))
    gradient = 1 + (tilt[:, 0, None, None] * xx + tilt[:, 1, None, None] * yy) / S
    grey = np.where(background, 0.07, albedo * shade + gloss) * gradient
    rgb = grey[..., None] * np.where(background[..., None], np.array([0.8, 0.9, 1.2]), np.ones(3))
    rgb = rgb * nz.exposure * nz.tint + rng.normal(0, 0.015, rgb.shape)
    return _to_uint8(rgb)


def _segment_distance(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every (u, v) to the segment a-b."""
    d = b - a
    t = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(u - a[0] - t * d[0], v - a[1] - t * d[1])


# --- audio: the arc's sound --------------------------------------------------------------------------


def render_audio(rng: np.random.Generator, kind: str, nz: Nuisance, rate: int, seconds: float) -> np.ndarray:
    """(N,) float32 in [-1, 1]: shop background + the arc (band noise buzzing at the droplet
    frequency) from ignition to extinction; the timing follows the weld speed, and a normal weld
    ends with a quieter crater-fill step before the arc fades out."""
    n = int(round(rate * seconds))
    sig = _signature_rng(rng)
    t = np.arange(n) / rate
    on = rng.uniform(0.03, 0.22) * seconds
    off = max((0.97 - 0.3 * nz.speed - rng.uniform(0, 0.1)) * seconds, on + 0.5 * seconds)
    fill, ramp, fill_level = rng.uniform(0.15, 0.25), 0.04, rng.uniform(0.2, 0.35)
    if kind == "abrupt_stop":  # crater: the arc is cut, no crater fill, no fade
        fill, ramp = 0.0, 0.002
    envelope = np.clip(np.minimum(t - on, off - t) / ramp, 0, 1) * np.where(t > off - fill, fill_level, 1)

    level = rng.uniform(0.08, 0.12)
    low, high = rng.uniform(100, 400), rng.uniform(1000, 2200)
    buzz = 1 + rng.uniform(0.2, 0.4) * np.sin(2 * np.pi * rng.uniform(60, 140) * t + rng.uniform(0, 6))
    arc = _band_noise(rng, n, rate, low, high) * buzz
    if kind == "hiss":  # undercut: a higher-pitched, hissing arc
        arc = 0.6 * arc + sig.uniform(1.0, 1.4) * _band_noise(sig, n, rate, 1900, 3400)
    elif kind == "weak":  # lack of fusion: a cold, quiet arc
        level *= sig.uniform(0.12, 0.18)
    elif kind == "crackle":  # porosity / spatter: bursts of short broadband clicks
        rate_hz = sig.uniform(10, 25)
        clicks = (sig.random(n) < rate_hz / rate) * sig.uniform(4, 8, n) * (envelope > 0.5)
        width = int(0.012 * rate)
        kernel = sig.standard_normal(width) * np.exp(-np.arange(width) / (0.003 * rate))
        arc = arc + np.convolve(clicks, kernel)[:n]
    elif kind == "pop":  # burn-through: a thump, then the arc drops out while the hole forms
        for _ in range(int(sig.integers(1, 3))):
            when = sig.uniform(on + 0.05 * seconds, off - 0.2 * seconds)  # the dropout ends before the arc
            length = sig.uniform(0.09, 0.18) * seconds
            envelope = envelope * np.where((t > when + 0.01) & (t < when + length), 0.05, 1.0)
            dt = np.clip(t - when, 0, None)
            arc = arc + 6 * (t >= when) * np.exp(-dt / 0.012) * np.sin(2 * np.pi * sig.uniform(80, 160) * dt)
    wave = level * envelope * arc

    # The shop: pink-ish noise, a ventilation hiss in the arc-hiss band (present with the arc off
    # too, which is how it differs from undercut), and a fan or motor tone.
    background = lfilter([1.0], [1.0, -0.97], rng.standard_normal(n))
    wave += rng.uniform(0.006, 0.01) * background / np.std(background)
    wave += rng.uniform(0, 0.08) * _band_noise(rng, n, rate, 1800, 3600)
    wave += rng.uniform(0, 0.012) * np.sin(2 * np.pi * rng.uniform(150, 3000) * t)
    wave *= np.exp(rng.uniform(np.log(0.3), np.log(3.0)))  # recording gain, +-10 dB
    return np.clip(wave, -1, 1).astype(np.float32)


# --- sensor log -----------------------------------------------------------------------------------


class SetPoints(NamedTuple):
    current: float  # A
    voltage: float  # V
    feed: float  # wire feed (the log's unit)
    gas: float  # CO2 flow, L/min
    pressure: float  # bar


def render_sensor(rng: np.random.Generator, kind: str, nz: Nuisance, setpoints: SetPoints
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Times (R,) in seconds from the start and values (R, 6) in SENSOR_COLUMNS order, at ~8.6 Hz.

    A run: idle (open-circuit voltage in many logs), gas pre-flow, ignition (current overshoot),
    the weld plateau with AR(1) ripple and slow drifts, a crater-fill step at reduced current,
    extinction, gas post-flow. The class signature changes plateau levels, the gas, or the end.
    """
    sig = _signature_rng(rng)
    rows = int(rng.integers(220, 361))
    dt = np.clip(rng.normal(0.116, 0.004, rows), 0.1, 0.13)
    t = np.concatenate([[0.0], np.cumsum(dt[:-1])])
    i = np.arange(rows)
    on = int(rows * rng.uniform(0.05, 0.30))
    off = max(int(rows * (0.95 - 0.3 * nz.speed - rng.uniform(0, 0.1))), on + int(0.3 * rows))
    fill = int(rng.integers(10, 21))
    arc = np.clip((i - on) / 3.0, 0, 1) * (i < off)
    if kind == "abrupt_stop":  # current and voltage fall in one row, with no crater fill before
        fill = 0
    else:
        arc = arc * np.clip((off - i) / 3.0, 0, 1)  # 3-row fade
    # Crater fill: the last `fill` rows of the weld at reduced current, reached by a 3-row ramp.
    crater_fill = np.clip((i - (off - fill - 3)) / 3.0, 0, 1) if fill else np.zeros(rows)
    progress = np.clip((i - on) / max(off - on, 1), 0, 1)  # 0 -> 1 over the weld, for drifts

    def ripple(rel: float) -> np.ndarray:  # AR(1) process noise
        return 1 + rel * lfilter([math.sqrt(1 - 0.8**2)], [1, -0.8], rng.standard_normal(rows))

    def drift(rel: float) -> np.ndarray:  # slow wander over the weld, up to +-rel
        trend, bow = rng.uniform(-0.7, 0.7), rng.uniform(-0.3, 0.3)
        return 1 + rel * (trend * progress + bow * np.sin(np.pi * progress))

    current = setpoints.current * drift(0.12)
    voltage = setpoints.voltage * drift(0.06)
    feed = setpoints.feed * drift(0.25)
    gas = setpoints.gas * drift(0.15)
    # A fault sets in part-way through the weld and stays: a step of the channel away from the run's
    # own set-point. Set-points vary widely between runs, so only the step (not the level) tells.
    after = i >= on + int((off - on) * sig.uniform(0.1, 0.6))
    if kind in ("high_current", "gas_drop_high_current"):
        current = np.where(after, current * sig.uniform(1.4, 1.55), current)
    elif kind == "low_current":
        current = np.where(after, current * sig.uniform(0.5, 0.6), current)
    elif kind == "low_voltage":
        voltage = np.where(after, voltage * sig.uniform(0.6, 0.7), voltage)
    elif kind == "high_voltage":
        voltage = np.where(after, voltage * sig.uniform(1.4, 1.55), voltage)
    elif kind == "high_feed":
        feed = np.where(after, feed * sig.uniform(2.0, 2.6), feed)
    if kind in ("gas_drop", "gas_drop_high_current"):  # shielding gas fails part-way through the weld
        drop = on + int((off - on) * sig.uniform(0.1, 0.6))
        gas = np.where(i >= drop, gas * sig.uniform(0.1, 0.3), gas)

    spikes = np.zeros(rows)
    spikes[rng.integers(0, rows, int(rng.integers(0, 4)))] = rng.uniform(-0.3, 0.3)
    spikes[min(on, rows - 1)] += rng.uniform(0.0, 0.6)  # ignition overshoot
    current = current * (1 - crater_fill * rng.uniform(0.4, 0.55))
    voltage = voltage * (1 - crater_fill * rng.uniform(0.1, 0.2))
    current = current * arc * (ripple(0.04) + spikes) + np.abs(rng.normal(0, 0.4, rows))
    voltage = voltage * arc * ripple(0.03) + np.abs(rng.normal(0, 0.1, rows))
    if rng.random() < 0.6:  # open-circuit voltage while the source waits for the arc
        idle = (i >= int(rng.integers(0, max(on, 1)))) & (i < on)
        voltage = np.where(idle, rng.uniform(55, 85) * ripple(0.01), voltage)
    feed = feed * arc * ripple(0.03)
    flowing = (i >= on - rng.integers(3, 7)) & (i <= off + rng.integers(5, 11))  # pre- and post-flow
    gas = np.where(flowing, gas * ripple(0.04), 0.2 * rng.random(rows))
    pressure = np.where(flowing, setpoints.pressure * gas / setpoints.gas, 0.02) * ripple(0.1)
    wire = rng.uniform(0, 3000) + np.cumsum(feed * dt) / 60.0  # a counter that carries over between runs
    values = np.stack([pressure, gas, feed, current, wire, voltage], axis=1)  # SENSOR_COLUMNS order
    return t, np.maximum(values, 0.0)


def write_sensor_csv(path: Path, t: np.ndarray, values: np.ndarray, date: str, clock_start: float,
                     part: str) -> None:
    """The published CSV layout: Date (MM/DD/YYYY), Time (HH:MM:SS.fff), Part No, channels, Remarks."""
    ms = np.round((clock_start + t) * 1000).astype(np.int64)
    hh, mm, ss, fff = ms // 3_600_000 % 24, ms // 60_000 % 60, ms // 1000 % 60, ms % 1000
    lines = [",".join(CSV_HEADER)]
    lines += [f"{date},{a:02d}:{b:02d}:{c:02d}.{d:03d},{part},"
              f"{p:.3f},{g:.2f},{f:.2f},{i:.2f},{w:.2f},{v:.2f},"
              for a, b, c, d, (p, g, f, i, w, v) in zip(hh, mm, ss, fff, values)]
    path.write_text("\n".join(lines) + "\n")


# --- the dataset ----------------------------------------------------------------------------------


def _session_folder(category: str, session: int, date: str, steel: str) -> str:
    stem = "good_weld" if category == "Good" else category.lower()
    return f"{stem}_{session + 1}_{date.replace('/', '-')[:6]}{date[-2:]}_{steel}"


def generate(out: str | Path, seed: int = 0, samples_per_class: int = 30, test_fraction: float = 1 / 3,
             sizes: SynthSizes | None = None) -> Path:
    """Write a synthetic dataset to `out` (created if needed) and return the manifest's path.

    Per class, round(samples_per_class * test_fraction) runs (chosen by the seed) are TEST, the rest
    TRAIN. Runs are grouped in sessions of RUNS_PER_SESSION, as in the published layout.
    """
    sizes = sizes or SynthSizes()
    if sizes.video_format not in ("avi", "mp4"):
        raise ConfigError("video_format", f"must be 'avi' or 'mp4', got {sizes.video_format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, category in enumerate(WELDING_LABELS):
        class_rng = np.random.default_rng([seed, label, 1_000_003])
        n_test = round(samples_per_class * test_fraction)
        test = set(class_rng.permutation(samples_per_class)[:n_test].tolist())
        sessions = math.ceil(samples_per_class / RUNS_PER_SESSION)
        session_meta = [_session_meta(np.random.default_rng([seed, label, 1_000_033, k]))
                        for k in range(sessions)]
        for index in range(samples_per_class):
            session = index // RUNS_PER_SESSION
            date, steel, weld_type, thickness = session_meta[session]
            runs_here = min(RUNS_PER_SESSION, samples_per_class - session * RUNS_PER_SESSION)
            directory = _session_folder(category, session, date, steel)
            run_id = f"{date[:2]}-{date[3:5]}-23-{index + 1:04d}-{CLASS_CODES[category]:02d}"
            rng = np.random.default_rng([seed, label, index])
            setpoints, speed_cpm = _write_run(out / directory / run_id, run_id, date, category, rng, sizes)
            rows.append({
                "CATEGORY": category, "WELD_TYPE": weld_type, "THICKNESS_MM": str(thickness),
                "STEEL_TYPE": steel,
                "SAMPLES": str(runs_here), "CURRENT_A": f"{setpoints.current:.0f}",
                "VOLTAGE_V": f"{setpoints.voltage:.1f}", "GAS_BAR": f"{setpoints.pressure * 10:.1f}",
                "ROBOT_SPEED_CPM": str(speed_cpm), "DIRECTORY": directory, "SUBDIRS": f"{directory}/{run_id}",
                "SPLIT": "TEST" if index in test else "TRAIN",
            })
    manifest = out / "manifest.csv"
    partial = out / "manifest.csv.partial"  # written last and renamed: no manifest means no dataset
    partial.write_text("\n".join([",".join(MANIFEST_COLUMNS)]
                                 + [",".join(r[c] for c in MANIFEST_COLUMNS) for r in rows]) + "\n")
    os.replace(partial, manifest)
    return manifest


def _session_meta(rng: np.random.Generator) -> tuple[str, str, str, int]:
    """A session's date (MM/DD/2023), steel, weld type and plate thickness (mm)."""
    date = f"{int(rng.integers(1, 13)):02d}/{int(rng.integers(1, 29)):02d}/2023"
    steel, weld_type = str(rng.choice(["Fe410", "BSK46"])), str(rng.choice(["butt", "fillet"]))
    return date, steel, weld_type, int(rng.choice([3, 7]))


def _write_run(directory: Path, run_id: str, date: str, category: str, rng: np.random.Generator,
               sizes: SynthSizes) -> tuple[SetPoints, int]:
    sig = SIGNATURES[category]
    speed_cpm = int(rng.choice([25, 30, 35, 40]))
    nz = Nuisance(speed=(speed_cpm - 25) / 15 + rng.uniform(-0.1, 0.1), exposure=rng.uniform(0.75, 1.25),
                  tint=1 + rng.uniform(-1, 1) * np.array([0.12, 0.0, -0.12]))
    setpoints = SetPoints(current=rng.uniform(110, 190), voltage=rng.uniform(16, 24),
                          feed=rng.uniform(30, 55), gas=rng.uniform(10, 22), pressure=rng.uniform(0.15, 0.5))
    (directory / "images").mkdir(parents=True, exist_ok=True)

    frames = render_video(rng, sig.video, nz, sizes.video_frames, sizes.video_size)
    write_video(directory / f"{run_id}.{sizes.video_format}", frames, sizes.fps)
    for k, photo in enumerate(render_images(rng, sig.images, nz, sizes.num_images, sizes.image_size)):
        Image.fromarray(photo).save(directory / "images" / f"view_{k}.jpg", quality=95)
    wave = render_audio(rng, sig.audio, nz, sizes.audio_rate, sizes.audio_seconds)
    sf.write(directory / f"{run_id}.flac", wave, sizes.audio_rate, subtype="PCM_16")
    t, values = render_sensor(rng, sig.sensor, nz, setpoints)
    write_sensor_csv(directory / f"{run_id}.csv", t, values, date, rng.uniform(8, 16) * 3600, run_id)
    return setpoints, speed_cpm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium synth welding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-class", type=int, default=30)
    parser.add_argument("--test-fraction", type=float, default=1 / 3)
    defaults = SynthSizes()
    parser.add_argument("--video-size", type=int, default=defaults.video_size)
    parser.add_argument("--video-frames", type=int, default=defaults.video_frames)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-images", type=int, default=defaults.num_images)
    parser.add_argument("--audio-seconds", type=float, default=defaults.audio_seconds)
    parser.add_argument("--video-format", choices=("avi", "mp4"), default=defaults.video_format)
    args = parser.parse_args(argv)
    if args.samples_per_class < 1 or not 0 <= args.test_fraction < 1:
        parser.error("need --samples-per-class >= 1 and 0 <= --test-fraction < 1")
    sizes = SynthSizes(video_size=args.video_size, video_frames=args.video_frames,
                       image_size=args.image_size, num_images=args.num_images,
                       audio_seconds=args.audio_seconds, video_format=args.video_format)
    start = time.perf_counter()
    manifest = generate(args.out, args.seed, args.samples_per_class, args.test_fraction, sizes)
    n = args.samples_per_class * len(WELDING_LABELS)
    print(f"wrote {n} welding runs ({len(WELDING_LABELS)} classes) to {manifest.parent} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
