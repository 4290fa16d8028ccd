"""`sensorium synth doppler --out DIR --users 31 --seed S`: micro-Doppler spectrograms of simulated
walking people, written in the Kaggle layout the doppler note reads (`DIR/ID_k/*.png`).

The simulation follows V. C. Chen's walking-human radar model (Chen, *The Micro-Doppler Effect in
Radar*, ch. 5; MATLAB `HumanWalkingModel.m` / `RadarReturnsFromWalkingHuman.m`), written afresh:

1. **Kinematics** (Boulic, Thalmann & Thalmann 1990, "A global human walking model"): the walk is
   parametrised by the relative velocity RV = v / Ht (speed over hip height). The gait cycle lasts
   Dc = 1.346 / sqrt(RV) seconds (times a per-user cadence factor); within a cycle, joint angles
   are smooth periodic functions of the phase: hip flexion (a cosine of amplitude `leg_swing`
   growing with RV), knee flexion (a loading bump at ~12% and the swing peak at ~72% of the cycle),
   ankle push-off, shoulder swing opposite the same-side leg (`arm_swing`), elbow flexion, and the
   trunk's vertical (2 per cycle), lateral and forward oscillations. Left limbs lag by half a cycle.
2. **Body**: 12 segments (head, torso, upper arms, forearms, thighs, shanks, feet) with lengths
   from the height by anthropometric ratios (Winter), each an ellipsoid scatterer at its midpoint,
   its long axis along the segment.
3. **Radar**: a monostatic CW radar at `carrier_hz` (24 GHz), height 1 m, complex baseband sampled
   at `prf_hz`. Each ellipsoid returns sqrt(RCS) / R^2 * exp(-j 4 pi R / lambda), with the RCS of an
   ellipsoid seen at aspect theta from its axis (Trott's formula, as in Chen's model):
   pi a^2 b^2 c^2 / (a^2 sin^2 theta + c^2 cos^2 theta)^2 for a = b. A static clutter return and
   complex white noise at a per-recording SNR are added. The pulse rate must exceed twice the
   largest Doppler, 2 v_max / lambda: feet near 5 m/s at 24 GHz shift by ~800 Hz, so 1.6 kHz is
   the least that does not alias; the default is 2 kHz.
4. **Spectrogram**: STFT (Hann window, `window` samples) evaluated at `bins` Doppler rows over
   `band_hz` (-250..1000 Hz), dB relative to the image's peak, clipped to `dynamic_range_db`, written as an
   8-bit grayscale PNG: rows are Doppler (positive, i.e. approaching, at the top), columns time.

Each **user** has a height, a preferred speed, a cadence factor, and leg and arm swing amplitudes
drawn from population ranges; each **recording** varies the speed (+-6%), the aspect angle between
the walking direction and the line of sight (0-35 degrees), the start distance, the gait phase, the
SNR and the clutter level. The users overlap in every single parameter; their combination is what
identifies them. `users.csv` records each user's true parameters, including the expected torso
Doppler and gait-cycle frequency that `sensorium eval doppler` measures back from spectrograms.

Everything is vectorised over recordings (in chunks), time samples and scatterers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sensorium.engine.checkpoint import atomic_write, atomic_write_json, atomic_write_text
from sensorium.errors import ConfigError

SPEED_OF_LIGHT = 299_792_458.0
SEGMENTS = ("head", "torso", "upper_arm_r", "upper_arm_l", "forearm_r", "forearm_l", "thigh_r", "thigh_l",
            "shank_r", "shank_l", "foot_r", "foot_l")
# Ellipsoid radii (the two short semi-axes) as a fraction of the height; the long semi-axis is half the
# segment's length. Head: a sphere-ish ellipsoid of ~0.11 m; torso ~0.15 m.
RADIUS = {"head": 0.06, "torso": 0.085, "upper_arm": 0.025, "forearm": 0.02, "thigh": 0.035, "shank": 0.026,
          "foot": 0.02}
USER_COLUMNS = ("user", "height_m", "speed_mps", "cadence_factor", "leg_swing_deg", "arm_swing_deg",
                "cycle_hz", "torso_doppler_hz")


@dataclass
class RadarConfig:
    """The radar and its spectrogram images."""

    carrier_hz: float = 24e9
    prf_hz: float = 2000.0
    """Complex samples per second; must exceed 2 v_max / lambda (feet ~5 m/s at 24 GHz: 1.6 kHz)."""
    duration_s: float = 3.2
    """Length of one recording (about three gait cycles)."""
    window: int = 128
    """STFT window in samples (64 ms at 2 kHz: Doppler resolution ~16 Hz, ~0.1 m/s at 24 GHz)."""
    bins: int = 64
    """Image height: Doppler rows over `band_hz`."""
    band_hz: tuple[float, float] = (-250.0, 1000.0)
    """Doppler band shown in the image (within [-prf/2, prf/2]): people walk towards the radar, so
    most of the return is positive; a little negative Doppler keeps the limbs' backward swing."""
    frames: int = 64
    """Image width: STFT frames over the recording."""
    dynamic_range_db: float = 40.0
    radar_height_m: float = 1.0
    kinematics_hz: float = 400.0
    """Rate at which the body's motion is computed (then interpolated to the pulse rate)."""

    @property
    def wavelength(self) -> float:
        return SPEED_OF_LIGHT / self.carrier_hz


@dataclass
class Population:
    """Ranges the users are drawn from (uniform unless said otherwise) and the per-recording variation."""

    height_m: tuple[float, float] = (1.55, 1.95)
    speed_mps: tuple[float, float] = (0.9, 1.6)
    cadence_factor: tuple[float, float] = (0.88, 1.12)
    """Multiplies Boulic's cycle frequency: people of one height and speed differ in stride length."""
    leg_swing_deg: tuple[float, float] = (18.0, 30.0)
    arm_swing_deg: tuple[float, float] = (8.0, 35.0)
    speed_jitter: float = 0.06
    """Per-recording relative speed change (uniform +-)."""
    aspect_deg: tuple[float, float] = (0.0, 35.0)
    """Angle between the walking direction and the line of sight to the radar."""
    distance_m: tuple[float, float] = (7.0, 12.0)
    snr_db: tuple[float, float] = (12.0, 28.0)
    """Per-sample SNR of the body's return against white noise (the STFT window adds ~17 dB, but
    the limbs' return is spread over many Doppler bins)."""
    clutter_db: tuple[float, float] = (-20.0, 0.0)
    """Static clutter power relative to the body's return (a zero-Doppler line)."""


# --- users and recordings -------------------------------------------------------------------------
def draw_users(num_users: int, rng: np.random.Generator,
               population: Population | None = None) -> dict[str, np.ndarray]:
    """Each user's true gait parameters, (num_users,) arrays."""
    p = population or Population()

    def uniform(bounds: tuple[float, float]) -> np.ndarray:
        return rng.uniform(bounds[0], bounds[1], num_users)

    return {"height_m": uniform(p.height_m), "speed_mps": uniform(p.speed_mps),
            "cadence_factor": uniform(p.cadence_factor), "leg_swing_deg": uniform(p.leg_swing_deg),
            "arm_swing_deg": uniform(p.arm_swing_deg)}


def hip_height(height: np.ndarray) -> np.ndarray:
    """Ht of Boulic's model: thigh + shank + ankle height (Winter's ratios 0.245 + 0.246 + 0.039)."""
    return 0.53 * height


def cycle_frequency(speed: np.ndarray, height: np.ndarray, cadence_factor: np.ndarray) -> np.ndarray:
    """Gait cycles per second: Boulic's Dc = 1.346 / sqrt(RV), RV = v / Ht, times the user's factor."""
    relative_velocity = speed / hip_height(height)
    return cadence_factor * np.sqrt(relative_velocity) / 1.346


def torso_doppler(speed: np.ndarray, aspect_deg: np.ndarray | float, wavelength: float) -> np.ndarray:
    """Doppler of a scatterer approaching at `speed` along a path `aspect_deg` off the line of sight."""
    return 2.0 * speed * np.cos(np.radians(aspect_deg)) / wavelength


def draw_recordings(users: dict[str, np.ndarray], per_user: int, rng: np.random.Generator,
                    population: Population | None = None) -> dict[str, np.ndarray]:
    """Per-recording conditions, (num_users * per_user,) arrays, user-major."""
    p = population or Population()
    n = len(users["height_m"]) * per_user
    user = np.repeat(np.arange(len(users["height_m"])), per_user)
    return {"user": user,
            "speed_mps": users["speed_mps"][user] * rng.uniform(1 - p.speed_jitter, 1 + p.speed_jitter, n),
            "aspect_deg": rng.uniform(*p.aspect_deg, n) * rng.choice([-1.0, 1.0], n),
            "distance_m": rng.uniform(*p.distance_m, n),
            "bearing_deg": rng.uniform(-30.0, 30.0, n),
            "phase": rng.uniform(0.0, 1.0, n),
            "snr_db": rng.uniform(*p.snr_db, n),
            "clutter_db": rng.uniform(*p.clutter_db, n)}


# --- kinematics -------------------------------------------------------------------------------------
def _bump(phase: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A periodic Gaussian bump over the gait phase (circular distance to `centre`)."""
    d = (phase - centre + 0.5) % 1.0 - 0.5
    return np.exp(-((d / width) ** 2))


def _limb_angles(phase: np.ndarray, relative_velocity: np.ndarray, leg_swing: np.ndarray,
                 arm_swing: np.ndarray) -> dict[str, np.ndarray]:
    """Joint angles (radians) of one body side at gait phase `phase` (0 = heel strike of that leg).
    Angles of a limb segment are measured from the downward vertical, positive forward."""
    c = np.cos(2 * np.pi * phase)
    speed_gain = np.clip(relative_velocity / 1.4, 0.6, 1.4) ** 0.5  # larger strides when walking faster
    hip = np.radians(5.0 + leg_swing * speed_gain * c)  # thigh forward at heel strike, back at toe-off
    knee = np.radians(15.0 * speed_gain * _bump(phase, 0.12, 0.07) + 60.0 * _bump(phase, 0.72, 0.11))
    ankle = np.radians(-18.0 * _bump(phase, 0.6, 0.06) + 8.0 * _bump(phase, 0.0, 0.08))
    shoulder = np.radians(-arm_swing * speed_gain * c)  # the arm swings opposite its own side's leg
    elbow = np.radians(12.0 + 0.5 * arm_swing * speed_gain * (1 - c) / 2)
    return {"hip": hip, "knee": knee, "ankle": ankle, "shoulder": shoulder, "elbow": elbow}


def body_points(t: np.ndarray, height: np.ndarray, speed: np.ndarray, cycle_hz: np.ndarray,
                phase0: np.ndarray, leg_swing: np.ndarray,
                arm_swing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment end points in the body frame (x forward, y left, z up; origin on the ground below
    the pelvis at t = 0, moving forward at `speed`).

    Args: t (T,) seconds; every other argument (R,) per recording.
    Returns: proximal and distal end points, each (R, T, 12, 3), segments in `SEGMENTS` order.
    """
    H = height[:, None]  # (R, 1)
    phase = (phase0[:, None] + cycle_hz[:, None] * t[None, :]) % 1.0  # (R, T) right-leg phase
    rv = (speed / hip_height(height))[:, None]
    right = _limb_angles(phase, rv, leg_swing[:, None], arm_swing[:, None])
    left = _limb_angles((phase + 0.5) % 1.0, rv, leg_swing[:, None], arm_swing[:, None])

    # Trunk: forward progression plus Boulic's oscillations (vertical twice per cycle).
    x = speed[:, None] * t[None, :] + 0.01 * H * np.sin(4 * np.pi * phase)
    y = 0.012 * H * np.sin(2 * np.pi * phase)
    z = hip_height(height)[:, None] + 0.015 * rv * H * np.sin(2 * np.pi * (2 * phase - 0.35))
    pelvis = np.stack([x, y, z], axis=-1)  # (R, T, 3)
    up = np.array([0.0, 0.0, 1.0])

    def along(angle: np.ndarray) -> np.ndarray:
        """Unit vector in the sagittal plane, `angle` from the downward vertical (forward positive)."""
        return np.stack([np.sin(angle), np.zeros_like(angle), -np.cos(angle)], axis=-1)  # (R, T, 3)

    def side(offset: float) -> np.ndarray:
        return np.array([0.0, offset, 0.0])

    segments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    neck = pelvis + (0.818 - 0.53) * H[..., None] * up
    segments["torso"] = (pelvis, neck)
    segments["head"] = (neck, neck + 0.13 * H[..., None] * up)
    for name, angles, sign in (("r", right, -1.0), ("l", left, 1.0)):
        hip_joint = pelvis + side(sign * 0.05) * H[..., None]
        knee = hip_joint + 0.245 * H[..., None] * along(angles["hip"])
        shank_angle = angles["hip"] - angles["knee"]
        ankle = knee + 0.246 * H[..., None] * along(shank_angle)
        foot_pitch = shank_angle + angles["ankle"]  # 0: foot flat, pointing forward
        toe = ankle + 0.152 * H[..., None] * np.stack(
            [np.cos(foot_pitch), np.zeros_like(foot_pitch), np.sin(foot_pitch)], axis=-1)
        shoulder = neck + side(sign * 0.129) * H[..., None]
        elbow = shoulder + 0.186 * H[..., None] * along(angles["shoulder"])
        wrist = elbow + 0.146 * H[..., None] * along(angles["shoulder"] + angles["elbow"])
        segments[f"thigh_{name}"] = (hip_joint, knee)
        segments[f"shank_{name}"] = (knee, ankle)
        segments[f"foot_{name}"] = (ankle, toe)
        segments[f"upper_arm_{name}"] = (shoulder, elbow)
        segments[f"forearm_{name}"] = (elbow, wrist)
    start = np.stack([segments[s][0] for s in SEGMENTS], axis=2)  # (R, T, 12, 3)
    end = np.stack([segments[s][1] for s in SEGMENTS], axis=2)
    return start, end


# --- radar ------------------------------------------------------------------------------------------
def ellipsoid_rcs(a: np.ndarray, c: np.ndarray, cos_aspect: np.ndarray) -> np.ndarray:
    """RCS (m^2) of an ellipsoid with semi-axes (a, a, c) seen at angle theta from its c axis."""
    cos2 = cos_aspect**2
    return np.pi * a**4 * c**2 / (a**2 * (1 - cos2) + c**2 * cos2) ** 2


def scatterer_geometry(points: np.ndarray, axes: np.ndarray, radius: np.ndarray, half_length: np.ndarray,
                       radar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range and return amplitude of each ellipsoid scatterer.

    Args:
        points: (R, T, K, 3) scatterer centres (world frame, metres); axes: (R, T, K, 3) unit long axes;
        radius, half_length: broadcastable to (R, T, K) semi-axes; radar: (3,) radar position.
    Returns: distance (R, T, K) and amplitude sqrt(RCS) / distance^2 (R, T, K).
    """
    line = points - radar  # (R, T, K, 3)
    distance = np.sqrt(np.square(line).sum(-1))  # (R, T, K)
    cos_aspect = np.abs((line * axes).sum(-1)) / distance
    return distance, np.sqrt(ellipsoid_rcs(radius, half_length, cos_aspect)) / distance**2


def returns(distance: np.ndarray, amplitude: np.ndarray, wavelength: float) -> np.ndarray:
    """(R, T, K) ranges and amplitudes -> (R, T) complex64 baseband, sum of A exp(-j 4 pi R / lambda)."""
    # The phase is formed in float64 (ranges of metres against a 12.5 mm wavelength), wrapped to
    # [0, 2 pi), and only then evaluated in float32.
    phase = np.mod((-4.0 * np.pi / wavelength) * distance, 2 * np.pi).astype(np.float32)
    amplitude = amplitude.astype(np.float32)
    return (amplitude * np.cos(phase)).sum(-1) + 1j * (amplitude * np.sin(phase)).sum(-1)


def scatterer_returns(points: np.ndarray, axes: np.ndarray, radius: np.ndarray, half_length: np.ndarray,
                      radar: np.ndarray, wavelength: float) -> np.ndarray:
    """(R, T) complex baseband of scatterers sampled at the pulse rate (see `scatterer_geometry`)."""
    return returns(*scatterer_geometry(points, axes, radius, half_length, radar),
                   wavelength).astype(np.complex64)


def _upsample(x: np.ndarray, factor: float, length: int) -> np.ndarray:
    """Linear interpolation along axis 1 of (R, Tc, ...) samples at rate r to `length` samples at
    rate r * factor."""
    position = np.arange(length) / factor  # (T,) in coarse samples
    i0 = np.minimum(position.astype(np.int64), x.shape[1] - 2)
    w = (position - i0).reshape(1, -1, *([1] * (x.ndim - 2)))
    return x[:, i0] * (1 - w) + x[:, i0 + 1] * w


def simulate_returns(recordings: dict[str, np.ndarray], users: dict[str, np.ndarray], radar: RadarConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """(R, T) complex baseband of each recording (see the module docstring).

    The body moves smoothly, so its kinematics and each scatterer's range and RCS are computed at
    `kinematics_hz` and linearly interpolated to the pulse rate: a foot's range (accelerations up to
    ~100 m/s^2) is then off by under 0.1 mm, a hundredth of the 12.5 mm wavelength."""
    n = int(round(radar.duration_s * radar.prf_hz))
    factor = radar.prf_hz / radar.kinematics_hz
    t = np.arange(int(np.ceil(n / factor)) + 2) / radar.kinematics_hz  # (Tc,) coarse times
    u = recordings["user"]
    height, speed = users["height_m"][u], recordings["speed_mps"]
    cycle_hz = cycle_frequency(speed, height, users["cadence_factor"][u])
    start, end = body_points(t, height, speed, cycle_hz, recordings["phase"], users["leg_swing_deg"][u],
                             users["arm_swing_deg"][u])
    centre, vector = (start + end) / 2, end - start  # (R, Tc, K, 3)
    length = np.sqrt(np.square(vector).sum(-1))  # (R, Tc, K)
    axes = vector / np.maximum(length, 1e-9)[..., None]

    # Body frame -> world, a rotation about the vertical: the walk heads at the radar, turned by the
    # aspect angle; the radar sits at the origin, the walker starts `distance` away at a bearing.
    bearing, aspect = np.radians(recordings["bearing_deg"]), np.radians(recordings["aspect_deg"])
    heading = bearing + np.pi + aspect
    cos_h, sin_h = (v[:, None, None] for v in (np.cos(heading), np.sin(heading)))  # (R, 1, 1)
    start_at = np.stack([np.cos(bearing), np.sin(bearing)], -1)[:, None]  # (R, 1, 2) unit vectors
    origin = recordings["distance_m"][:, None, None] * start_at

    def to_world(v: np.ndarray, shift: bool) -> np.ndarray:
        x, y = v[..., 0] * cos_h - v[..., 1] * sin_h, v[..., 0] * sin_h + v[..., 1] * cos_h  # (R, Tc, K)
        if shift:
            x, y = x + origin[..., 0:1], y + origin[..., 1:2]
        return np.stack([x, y, v[..., 2]], axis=-1)

    radius = np.array([RADIUS[s] if s in RADIUS else RADIUS[s.rsplit("_", 1)[0]] for s in SEGMENTS])  # (K,)
    radius = radius[None, None, :] * height[:, None, None]  # (R, 1, K)
    radar_position = np.array([0.0, 0.0, radar.radar_height_m])
    distance, amplitude = scatterer_geometry(to_world(centre, True), to_world(axes, False), radius,
                                             length / 2, radar_position)
    signal = returns(_upsample(distance, factor, n), _upsample(amplitude, factor, n),
                     radar.wavelength)  # (R, T)

    power = np.mean(np.abs(signal) ** 2, axis=1, keepdims=True)  # (R, 1)
    clutter = np.sqrt(power * 10 ** (recordings["clutter_db"][:, None] / 10)) * np.exp(
        2j * np.pi * rng.uniform(0, 1, (len(u), 1)))
    noise_std = np.sqrt(power / 10 ** (recordings["snr_db"][:, None] / 10) / 2)
    noise = noise_std * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
    return (signal + clutter + noise).astype(np.complex64)


def spectrogram_db(signal: np.ndarray, radar: RadarConfig) -> np.ndarray:
    """(R, T) complex baseband -> (R, bins, frames) power in dB relative to each image's peak,
    clipped to [-dynamic_range_db, 0]; row 0 is the most positive Doppler of `band_hz`.

    The Doppler rows are a zoomed DFT of each Hann-windowed frame at the rows' centre frequencies
    (one matmul), so any band and any number of rows come out exact, without an FFT size to match."""
    R, T = signal.shape
    if radar.frames < 2 or T < radar.window:
        raise ConfigError("radar", f"{T} samples cannot give {radar.frames} frames of {radar.window}")
    starts = np.linspace(0, T - radar.window, radar.frames).round().astype(np.int64)  # (F,)
    index = starts[:, None] + np.arange(radar.window)[None, :]  # (F, W)
    frames = signal[:, index] * np.hanning(radar.window).astype(np.float32)  # (R, F, W)
    freqs = doppler_axis(radar)  # (bins,), top row first
    n = np.arange(radar.window)
    kernel = np.exp(-2j * np.pi * np.outer(n, freqs) / radar.prf_hz).astype(np.complex64)  # (W, bins)
    power = np.abs(frames @ kernel) ** 2  # (R, F, bins)
    db = 10 * np.log10(power.transpose(0, 2, 1) + 1e-20)  # (R, bins, F)
    db -= db.max(axis=(1, 2), keepdims=True)
    return np.clip(db, -radar.dynamic_range_db, 0.0)


def doppler_axis(radar: RadarConfig) -> np.ndarray:
    """(bins,) centre frequency (Hz) of each image row, top (most positive) to bottom."""
    lo, hi = radar.band_hz
    if not -radar.prf_hz / 2 <= lo < hi <= radar.prf_hz / 2:
        raise ConfigError("radar.band_hz",
                          f"{radar.band_hz} must lie within +-prf/2 = {radar.prf_hz / 2:g} Hz")
    edges = np.linspace(lo, hi, radar.bins + 1)
    return ((edges[:-1] + edges[1:]) / 2)[::-1]


def to_uint8(db: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    return np.round((db + dynamic_range_db) / dynamic_range_db * 255.0).astype(np.uint8)


# --- writing ---------------------------------------------------------------------------------------
def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(pixels, mode="L").save(tmp, format="PNG"))


def generate(out: str | Path, users: int = 31, per_user: int = 60, seed: int = 0,
             radar: RadarConfig | None = None, population: Population | None = None,
             chunk: int = 32) -> dict:
    """Write `out/ID_k/rec_XXXX.png` for users k = 1..users, `out/users.csv` and `out/synth.json`.
    Deterministic for a seed; returns the synth.json content."""
    if users < 1 or per_user < 1:
        raise ConfigError("synth doppler", f"needs at least one user and recording (got {users}, {per_user})")
    radar = radar or RadarConfig()
    population = population or Population()
    max_doppler = 2 * 5.0 / radar.wavelength
    if radar.prf_hz < 2 * max_doppler:
        raise ConfigError("radar.prf_hz", f"{radar.prf_hz:g} Hz aliases the feet's Doppler (up to "
                                          f"{max_doppler:.0f} Hz at 5 m/s): use at least "
                                          f"{2 * max_doppler:.0f} Hz")
    out = Path(out)
    rng = np.random.default_rng(seed)
    truth = draw_users(users, rng, population)
    recordings = draw_recordings(truth, per_user, rng, population)
    for first in range(0, users * per_user, chunk):
        part = {k: v[first:first + chunk] for k, v in recordings.items()}
        images = to_uint8(spectrogram_db(simulate_returns(part, truth, radar, rng), radar),
                          radar.dynamic_range_db)
        for i, pixels in enumerate(images):
            n = first + i
            _write_png(out / f"ID_{int(recordings['user'][n]) + 1}" / f"rec_{n % per_user:04d}.png", pixels)

    cycle = cycle_frequency(truth["speed_mps"], truth["height_m"], truth["cadence_factor"])
    mean_cos = _mean_cos(population.aspect_deg)
    rows = [[k + 1, *(round(float(truth[c][k]), 4) for c in USER_COLUMNS[1:6]), round(float(cycle[k]), 4),
             round(float(2 * truth["speed_mps"][k] * mean_cos / radar.wavelength), 2)] for k in range(users)]
    lines = [",".join(USER_COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
    atomic_write_text(out / "users.csv", "\n".join(lines) + "\n")
    info = {"users": users, "per_user": per_user, "seed": seed, "radar": asdict(radar),
            "population": asdict(population), "image_size": [radar.bins, radar.frames], "mode": "L",
            "doppler_axis_hz": [round(float(f), 3) for f in doppler_axis(radar)],
            "torso_doppler_note": "users.csv torso_doppler_hz = 2 v E[cos aspect] / lambda over the "
                                  "recordings' aspect range"}
    atomic_write_json(out / "synth.json", info)
    return info


def _mean_cos(bounds: tuple[float, float]) -> float:
    """E[cos a] for a uniform in `bounds` (degrees)."""
    lo, hi = np.radians(bounds)
    return float((np.sin(hi) - np.sin(lo)) / (hi - lo)) if hi > lo else float(np.cos(lo))


def read_users_csv(path: str | Path) -> dict[int, dict[str, float]]:
    """users.csv -> {user id: {column: value}}."""
    with open(path, newline="") as f:
        return {int(row["user"]): {k: float(v) for k, v in row.items() if k != "user"}
                for row in csv.DictReader(f)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium synth doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--users", type=int, default=31)
    parser.add_argument("--per-user", type=int, default=60, help="recordings per user (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("BINS", "FRAMES"),
                        help="image height (Doppler bins) and width (time frames)")
    parser.add_argument("--prf", type=float, default=2000.0, help="pulse repetition frequency, Hz")
    args = parser.parse_args(argv)
    radar = RadarConfig(prf_hz=args.prf, bins=args.size[0], frames=args.size[1])
    info = generate(args.out, users=args.users, per_user=args.per_user, seed=args.seed, radar=radar)
    print(f"[synth] {info['users']} users x {info['per_user']} recordings of {radar.duration_s:g} s "
          f"({radar.carrier_hz / 1e9:g} GHz, PRF {radar.prf_hz:g} Hz) -> {args.out}/ID_k/*.png, users.csv")
    print(json.dumps({"image_size": info["image_size"]}))
    return 0
