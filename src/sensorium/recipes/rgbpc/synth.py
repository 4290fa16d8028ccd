"""Synthetic robot-manipulation episodes in the rgbpc layout (see reader.py):

    sensorium synth rgbpc --out DIR [--seed S] [--episodes-per-task N] [--steps S] [--size H W]
                          [--points N] [--workers W]

**Scenes.** A textured table (z = 0 plane, world frame in metres, z up) holds three or four
textured primitives (sphere, vertical cylinder, box turned about z, cone), each with a random colour
and pattern (plain, stripes or checks), so colour says nothing about shape. An end effector (a
grey sphere on a vertical rod) starts above the table and moves toward the **target**, the one
object of the task's target shape:

    task               target     distractors drawn from
    reach_cylinder     cylinder   box, sphere
    reach_sphere       sphere     box, cone
    reach_box          box        cone, cylinder

**Camera.** A mounted camera looks at the table from an azimuth of +-8 degrees about the front, an
elevation of 42-52 degrees and 0.66-0.72 m away (different per episode), and moves over the episode
(the azimuth sweeps 10 degrees, elevation and distance drift), so a fixed pixel sees other scene
points in other frames (about 15 pixels apart across a window of 8 frames).

**Rendering** is a vectorised ray caster over the analytic primitives (exact ray intersections,
nearest hit per ray): Lambertian shading under one directional light plus ambient light, exact
depth. Frames are rendered at pixel centres (OpenCV convention, see reader.py).

**Point clouds.** N rays through uniformly random sub-pixel positions (the uv, exact by
construction) give the points that hit the scene (world xyz, the colour seen there), as a depth
camera back-projected and calibrated into the robot's frame would.

**Teacher features** (`pc_feat`, 32 floats per point) come from a fixed, documented point encoder,
the stand-in for ULIP: the concatenation of the point's world position (x, y, z / 0.4 m and their
sines and cosines at one frequency), its surface normal, its height above the table (/ 0.2 m) and
an embedding of the surface part it lies on (table, sphere, cylinder side / top, box side / top,
cone, effector), mixed by one fixed random orthogonal matrix (seed `TEACHER_SEED`, the same for every
dataset). It holds the 3-D geometry and the shape, not colour or texture.

**Actions.** Per step, the 3-D vector from the effector to the grasp point above the target's top
(dx, dy, dz in metres, world frame); the effector then moves 15% of the way plus a little noise.
Predicting it needs the target's identity (by shape) and the 3-D positions of target and
effector: point-cloud features carry both, raw RGB features carry neither directly.

Deterministic for a seed; episodes are independent (parallel with --workers).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sensorium.data.processes import process_pool
from sensorium.errors import ConfigError
from sensorium.recipes.rgbpc.reader import CAMERA_FILE, write_ply

TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reach_cylinder": ("cylinder", ("box", "sphere")),
    "reach_sphere": ("sphere", ("box", "cone")),
    "reach_box": ("box", ("cone", "cylinder")),
}
PARTS = ("table", "sphere", "cylinder_side", "cylinder_top", "box_side", "box_top", "cone", "effector")
TEACHER_SEED = 20251229
TEACHER_DIM = 32
ACTION_NAMES = ("dx", "dy", "dz")
TABLE_HALF = (0.8, 0.6)
LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
BACKGROUND = np.array([0.82, 0.85, 0.9])


@dataclass(frozen=True)
class SynthConfig:
    episodes_per_task: int = 96
    """96: the action head's probe is fitted on the training episodes' steps, and with 48 per task (93
    training episodes) it was data-starved: half of those raised even the point-cloud features' error
    from 0.25 / 0.27 to 0.74 / 0.63 (demo data seeds 0 / 1)."""
    steps: int = 12
    image_size: tuple[int, int] = (96, 128)
    points: int = 1024
    fov_deg: float = 50.0
    """Horizontal field of view."""


# --- ray-primitive intersections (vectorised over rays) ---------------------------------------------
# Each returns (t, normal, part, texture coordinates): t (R,) distance along the ray (inf for a miss),
# normal (R, 3), part (R,) index into PARTS, uv (R, 2) texture coordinates.
INF = np.inf


def _nearest_root(a, b, c):
    """Smallest positive root of a t^2 + b t + c = 0 per ray (inf where none); both roots too."""
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (np.abs(a) > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(ok, (-b - sq) / (2 * a), INF)
        t1 = np.where(ok, (-b + sq) / (2 * a), INF)
    return t0, t1


def _first_valid(candidates):
    """Per ray, the smallest of several (t, valid) candidates: (t, index of the winner)."""
    ts = np.stack([np.where(valid & (t > 1e-6), t, INF) for t, valid in candidates])  # (n, R)
    return ts.min(axis=0), ts.argmin(axis=0)


def hit_table(o, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[:, 2] < -1e-9, -o[2] / d[:, 2], INF)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    inside = (np.abs(p[:, 0]) <= TABLE_HALF[0]) & (np.abs(p[:, 1]) <= TABLE_HALF[1])
    t = np.where(inside, t, INF)
    normal = np.broadcast_to(np.array([0.0, 0.0, 1.0]), d.shape)
    return t, normal, np.full(len(d), PARTS.index("table")), p[:, :2]


def hit_sphere(o, d, centre, radius, part="sphere"):
    oc = o - centre
    b = 2 * d @ oc
    c = oc @ oc - radius * radius
    t0, t1 = _nearest_root(np.ones(len(d)), b, np.full(len(d), c))
    t = np.where(t0 > 1e-6, t0, np.where(t1 > 1e-6, t1, INF))
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    normal = (p - centre) / radius
    tex = np.stack([np.arctan2(normal[:, 1], normal[:, 0]) / np.pi, normal[:, 2]], axis=1)
    return t, normal, np.full(len(d), PARTS.index(part)), tex


def hit_cylinder(o, d, centre_xy, radius, z0, z1, parts=("cylinder_side", "cylinder_top")):
    """Vertical cylinder between heights z0 and z1, with a top cap."""
    ox, oy = o[0] - centre_xy[0], o[1] - centre_xy[1]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1])
    c = np.full(len(d), ox * ox + oy * oy - radius * radius)
    s0, s1 = _nearest_root(a, b, c)
    z_s0, z_s1 = o[2] + s0 * d[:, 2], o[2] + s1 * d[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_top = np.where(np.abs(d[:, 2]) > 1e-9, (z1 - o[2]) / d[:, 2], INF)
    top_xy = o[:2] + np.where(np.isfinite(t_top), t_top, 0)[:, None] * d[:, :2] - centre_xy
    t, which = _first_valid([(s0, (z_s0 >= z0) & (z_s0 <= z1)), (s1, (z_s1 >= z0) & (z_s1 <= z1)),
                             (t_top, (top_xy ** 2).sum(1) <= radius * radius)])
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    side = which < 2
    radial = np.concatenate([(p[:, :2] - centre_xy) / radius, np.zeros((len(d), 1))], axis=1)
    normal = np.where(side[:, None], radial, np.array([0.0, 0.0, 1.0]))
    angle = np.arctan2(radial[:, 1], radial[:, 0]) / np.pi
    tex = np.where(side[:, None], np.stack([angle, (p[:, 2] - z0) / 0.1], 1), (p[:, :2] - centre_xy) / radius)
    part = np.where(side, PARTS.index(parts[0]), PARTS.index(parts[1]))
    return t, normal, part, tex


def hit_box(o, d, centre_xy, half, height, yaw):
    """Box [-hx, hx] x [-hy, hy] x [0, height] turned by `yaw` about z, standing on the table."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> box frame
    lo_ = rot @ (o - np.array([centre_xy[0], centre_xy[1], 0.0]))
    ld = d @ rot.T
    lo, hi = np.array([-half[0], -half[1], 0.0]), np.array([half[0], half[1], height])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / ld
        t_lo, t_hi = (lo - lo_) * inv, (hi - lo_) * inv  # (R, 3)
    t_near = np.minimum(t_lo, t_hi)
    t_far = np.maximum(t_lo, t_hi)
    t_enter = np.nanmax(t_near, axis=1)
    t_exit = np.nanmin(t_far, axis=1)
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    t = np.where(hit, t_enter, INF)
    axis = np.nanargmax(t_near, axis=1)  # the slab entered last is the face hit
    sign = -np.sign(ld[np.arange(len(d)), axis])
    local_normal = np.zeros((len(d), 3))
    local_normal[np.arange(len(d)), axis] = sign
    normal = local_normal @ rot  # back to world
    p_local = lo_ + np.where(np.isfinite(t), t, 0)[:, None] * ld
    top = axis == 2
    tex = np.where(top[:, None], p_local[:, :2] / 0.05,
                   np.stack([np.where(axis == 0, p_local[:, 1], p_local[:, 0]) / 0.05, p_local[:, 2] / 0.05], 1))
    part = np.where(top, PARTS.index("box_top"), PARTS.index("box_side"))
    return t, normal, part, tex


def hit_cone(o, d, centre_xy, radius, height):
    """Upright cone: base radius `radius` on the table, apex at `height`."""
    k2 = (radius / height) ** 2
    ox, oy, oz = o[0] - centre_xy[0], o[1] - centre_xy[1], height - o[2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1] + k2 * oz * d[:, 2])
    c = np.full(len(d), ox * ox + oy * oy - k2 * oz * oz)
    t0, t1 = _nearest_root(a, b, c)
    lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
    z_lo, z_hi = o[2] + lo * d[:, 2], o[2] + hi * d[:, 2]
    t, _ = _first_valid([(lo, (z_lo >= 0) & (z_lo <= height)), (hi, (z_hi >= 0) & (z_hi <= height))])
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    rel = p[:, :2] - centre_xy
    # gradient of |rel|^2 - k^2 (h - z)^2, with k (h - z) = |rel| on the surface: (rel, k |rel|)
    normal = np.concatenate([rel, np.sqrt(k2) * np.linalg.norm(rel, axis=1, keepdims=True)], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-9)
    tex = np.stack([np.arctan2(rel[:, 1], rel[:, 0]) / np.pi, p[:, 2] / 0.05], axis=1)
    return t, normal, np.full(len(d), PARTS.index("cone")), tex


# --- scenes -------------------------------------------------------------------------------------------
@dataclass
class SceneObject:
    shape: str
    centre: np.ndarray  # (2,) on the table
    size: dict  # radius / half / height / yaw
    colour: np.ndarray  # (3,) base colour in [0, 1]
    colour2: np.ndarray
    pattern: int  # 0 plain, 1 stripes, 2 checks
    frequency: float

    @property
    def top(self) -> float:
        return 2 * self.size["radius"] if self.shape == "sphere" else self.size["height"]


def _colour(rng) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.45, 0.9), rng.uniform(0.5, 0.95)))


def _make_object(shape: str, centre: np.ndarray, rng) -> SceneObject:
    if shape == "sphere":
        size = {"radius": rng.uniform(0.06, 0.085)}
    elif shape == "cylinder":
        size = {"radius": rng.uniform(0.05, 0.075), "height": rng.uniform(0.12, 0.22)}
    elif shape == "box":
        size = {"half": rng.uniform(0.05, 0.075, size=2), "height": rng.uniform(0.08, 0.17),
                "yaw": rng.uniform(0, np.pi)}
    else:
        size = {"radius": rng.uniform(0.06, 0.085), "height": rng.uniform(0.13, 0.22)}
    colour = _colour(rng)
    # The pattern's second colour is a darker or lighter shade of the first: texture that varies
    # between objects without drowning the shading, which (with the silhouette) shows the shape.
    shade = colour * rng.uniform(0.6, 0.8) if rng.uniform() < 0.5 else 1 - (1 - colour) * rng.uniform(0.6, 0.8)
    return SceneObject(shape, centre, size, colour, shade, int(rng.integers(3)), rng.uniform(2.0, 5.0))


MAX_REJECTED_PLACES = 10_000
"""Rejected places after which make_scene places every object again."""


def make_scene(task: str, rng) -> tuple[list[SceneObject], int]:
    """The target plus 2-3 distractors at non-overlapping random places, and the target's index."""
    target, pool = TASKS[task]
    shapes = [target] + list(rng.choice(pool, size=int(rng.integers(2, 4))))
    centres: list[np.ndarray] = []
    rejected = 0
    while len(centres) < len(shapes):
        c = rng.uniform([-0.25, -0.2], [0.25, 0.2])
        if all(np.linalg.norm(c - other) > 0.22 for other in centres):
            centres.append(c)
        else:
            rejected += 1
        if rejected == MAX_REJECTED_PLACES:
            # The first places can leave no room for the last object: place them all again. (Without
            # this the loop never ended for some random states, e.g. view 1 of the pretraining stream of
            # seed 0.) Scenes placed within the limit are drawn exactly as before.
            centres, rejected = [], 0
    order = rng.permutation(len(shapes))  # the target's place in the list is not a cue
    return [_make_object(shapes[i], centres[j], rng) for j, i in enumerate(order)], int(np.flatnonzero(order == 0)[0])


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world of a camera at `eye` looking at `target` (x right, y down, z forward)."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def camera_path(steps: int, rng) -> list[np.ndarray]:
    """Camera-to-world poses of one episode: a mounted camera (azimuth +-8 degrees about the front,
    elevation 42-52 degrees, 0.66-0.72 m from the table's centre, different per episode) that
    sweeps 10 degrees of azimuth over the episode while its elevation and distance drift a little."""
    azimuth0 = np.deg2rad(rng.uniform(-8, 8))
    sweep = np.deg2rad(10.0) * rng.choice([-1.0, 1.0])
    elevation0, distance0 = np.deg2rad(rng.uniform(42, 52)), rng.uniform(0.66, 0.72)
    drift_e, drift_d = np.deg2rad(rng.uniform(-3, 3)), rng.uniform(-0.03, 0.03)
    look = np.array([0.0, 0.0, 0.06])
    poses = []
    for s in np.linspace(0.0, 1.0, steps):
        az, el, dist = azimuth0 + sweep * (s - 0.5), elevation0 + drift_e * s, distance0 + drift_d * s
        eye = look + dist * np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])
        poses.append(_look_at(eye, look))
    return poses


# --- rendering --------------------------------------------------------------------------------------
def _texture(objects: list[SceneObject], table: tuple, which: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """(R, 3) albedo: the object's (or table's) pattern at texture coordinates `tex`."""
    albedo = np.empty((len(which), 3))
    sources = [table] + [(o.colour, o.colour2, o.pattern, o.frequency) for o in objects]
    for i, (c1, c2, pattern, freq) in enumerate(sources):
        sel = which == i
        if not sel.any():
            continue
        uv = tex[sel] * freq
        if pattern == 0:
            mix = np.zeros(len(uv))
        elif pattern == 1:
            mix = (np.floor(uv[:, 0]) % 2).astype(float)
        else:
            mix = ((np.floor(uv[:, 0]) + np.floor(uv[:, 1])) % 2).astype(float)
        albedo[sel] = c1 * (1 - mix[:, None]) + c2 * mix[:, None]
    return albedo


def cast(o: np.ndarray, d: np.ndarray, objects: list[SceneObject], effector: np.ndarray, table: tuple):
    """Nearest hit of rays from `o` along `d` (R, 3): t, normal, part, source (0 table, 1.. objects,
    len+1 effector), colour (R, 3) shaded."""
    hits = [hit_table(o, d)]
    for obj in objects:
        sz = obj.size
        if obj.shape == "sphere":
            hits.append(hit_sphere(o, d, np.array([*obj.centre, sz["radius"]]), sz["radius"]))
        elif obj.shape == "cylinder":
            hits.append(hit_cylinder(o, d, obj.centre, sz["radius"], 0.0, sz["height"]))
        elif obj.shape == "box":
            hits.append(hit_box(o, d, obj.centre, sz["half"], sz["height"], sz["yaw"]))
        else:
            hits.append(hit_cone(o, d, obj.centre, sz["radius"], sz["height"]))
    ball = hit_sphere(o, d, effector, 0.032, part="effector")
    rod = hit_cylinder(o, d, effector[:2], 0.012, effector[2], 1.6, parts=("effector", "effector"))
    t_all = np.stack([h[0] for h in hits] + [ball[0], rod[0]])  # (S, R)
    source = t_all.argmin(axis=0)
    t = t_all[source, np.arange(len(d))]
    normal = np.stack([h[1] for h in hits] + [ball[1], rod[1]])[source, np.arange(len(d))]
    part = np.stack([h[2] for h in hits] + [ball[2], rod[2]])[source, np.arange(len(d))]
    tex = np.stack([h[3] for h in hits] + [ball[3], rod[3]])[source, np.arange(len(d))]
    source = np.minimum(source, len(objects) + 1)  # ball and rod are one effector
    albedo = _texture(objects, table, source, tex)
    albedo[source == len(objects) + 1] = np.array([0.55, 0.56, 0.6])
    shade = 0.35 + 0.65 * np.clip(normal @ LIGHT, 0.0, 1.0)
    colour = np.clip(albedo * shade[:, None], 0, 1)
    colour[~np.isfinite(t)] = BACKGROUND
    return t, normal, part, source, colour


def rays(pose: np.ndarray, uv: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(R, 3) unit world directions through pixels uv (R, 2)."""
    cam = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(len(uv))], axis=1)
    d = cam @ pose[:3, :3].T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


# --- the fixed point encoder ------------------------------------------------------------------------
def _teacher_matrices() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(TEACHER_SEED)
    parts = np.linalg.qr(rng.normal(size=(len(PARTS), len(PARTS))))[0]  # (P, P) orthonormal part codes
    raw_dim = 3 + 6 + 3 + 1 + len(PARTS)
    mix = np.linalg.qr(rng.normal(size=(TEACHER_DIM, raw_dim)))[0]  # (32, 21) orthonormal columns
    return parts, mix


def teacher_features(xyz: np.ndarray, normal: np.ndarray, part: np.ndarray) -> np.ndarray:
    """(N, 32) float32 features of points (N, 3) with normals (N, 3) on parts (N,) (see the module
    docstring): the synthetic stand-in for a frozen point encoder such as ULIP."""
    part_codes, mix = _teacher_matrices()
    scaled = xyz / 0.4
    raw = np.concatenate([scaled, np.sin(np.pi * scaled), np.cos(np.pi * scaled), normal, xyz[:, 2:3] / 0.2,
                          part_codes[part]], axis=1)  # (N, 21)
    return (raw @ mix.T).astype(np.float32)


# --- single views (pretraining the demo's shape encoder) -----------------------------------------------
PRETRAIN_STREAM = 990_001
"""Seeds the pretraining views' own random stream, apart from every episode's ([seed, task, index])."""


def _random_table(rng) -> tuple:
    return (np.array([0.62, 0.5, 0.36]) * rng.uniform(0.8, 1.1), np.array([0.5, 0.39, 0.27]) * rng.uniform(0.8, 1.1),
            int(rng.integers(1, 3)), rng.uniform(3.0, 6.0))


def render_views(count: int, seed: int, config: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` single frames of fresh scenes (their own random stream, never an episode of a dataset):
    images (N, H, W, 3) uint8, camera depth (N, H, W) float32 (0 where the ray misses), and the surface
    part of each pixel (N, H, W) int64 (index into PARTS, len(PARTS) where the ray misses)."""
    rng = np.random.default_rng([PRETRAIN_STREAM, seed])
    H, W = config.image_size
    fx = W / (2 * np.tan(np.deg2rad(config.fov_deg) / 2))
    pixel_uv = np.stack(np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)), -1).reshape(-1, 2)
    images, depths, parts = [], [], []
    for _ in range(count):
        objects, _ = make_scene(list(TASKS)[int(rng.integers(len(TASKS)))], rng)
        effector = np.array([*rng.uniform([-0.2, -0.16], [0.2, 0.16]), rng.uniform(0.1, 0.28)])
        pose = camera_path(2, rng)[int(rng.integers(2))]
        d = rays(pose, pixel_uv, fx, fx, (W - 1) / 2, (H - 1) / 2)
        t, _, part, _, colour = cast(pose[:3, 3], d, objects, effector, _random_table(rng))
        hit = np.isfinite(t)
        images.append((colour.reshape(H, W, 3) * 255 + 0.5).astype(np.uint8))
        depths.append(np.where(hit, t * (d @ pose[:3, 2]), 0.0).reshape(H, W).astype(np.float32))
        parts.append(np.where(hit, part, len(PARTS)).reshape(H, W))
    return np.stack(images), np.stack(depths), np.stack(parts).astype(np.int64)


# --- episodes -----------------------------------------------------------------------------------------
def render_episode(root: Path, task: str, index: int, seed: int, config: SynthConfig) -> str:
    task_index = list(TASKS).index(task)
    rng = np.random.default_rng([seed, task_index, index])
    name = f"episode_{index:03d}"
    objects, target_index = make_scene(task, rng)
    table = _random_table(rng)
    target = objects[target_index]
    goal = np.array([*target.centre, target.top + 0.03])
    effector = np.array([*rng.uniform([-0.2, -0.16], [0.2, 0.16]), rng.uniform(0.18, 0.28)])
    H, W = config.image_size
    fx = fy = W / (2 * np.tan(np.deg2rad(config.fov_deg) / 2))
    cx, cy = (W - 1) / 2, (H - 1) / 2
    poses = camera_path(config.steps, rng)
    rgb_dir, pc_dir = root / "rgb" / task / name, root / "pc" / task / name
    rgb_dir.mkdir(parents=True, exist_ok=True)
    pc_dir.mkdir(parents=True, exist_ok=True)
    pixel_uv = np.stack(np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)), -1).reshape(-1, 2)
    actions = []
    for step, pose in enumerate(poses):
        stem = f"step_{step:04d}"
        origin = pose[:3, 3]
        _, _, _, _, colour = cast(origin, rays(pose, pixel_uv, fx, fy, cx, cy), objects, effector, table)
        image = (colour.reshape(H, W, 3) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(image).save(rgb_dir / f"{stem}.png", compress_level=1)
        uv = rng.uniform([-0.5, -0.5], [W - 0.5, H - 0.5], size=(config.points, 2))
        d = rays(pose, uv, fx, fy, cx, cy)
        t, normal, part, _, point_colour = cast(origin, d, objects, effector, table)
        keep = np.isfinite(t)
        xyz = origin + t[keep, None] * d[keep]
        write_ply(pc_dir / f"{stem}.ply", xyz, (point_colour[keep] * 255 + 0.5).astype(np.uint8))
        features = teacher_features(xyz, normal[keep], part[keep])
        np.savez(pc_dir / f"{stem}.npz", uv=uv[keep].astype(np.float32), pc_feat=features)
        action = goal - effector
        actions.append(action)
        effector = effector + 0.15 * action + rng.normal(0, 0.004, size=3)
    camera = {"image_size": [H, W], "intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy},
              "camera_to_world": {f"step_{s:04d}": p.tolist() for s, p in enumerate(poses)},
              "target": {"shape": target.shape, "index": target_index}}
    (rgb_dir / CAMERA_FILE).write_text(json.dumps(camera))
    action_dir = root / "actions" / task
    action_dir.mkdir(parents=True, exist_ok=True)
    lines = ["step," + ",".join(ACTION_NAMES)] + [f"{s}," + ",".join(f"{v:.6f}" for v in a) for s, a in enumerate(actions)]
    (action_dir / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return f"{task}/{name}"


def _render_job(args) -> str:
    return render_episode(*args)


def generate(out: str | Path, seed: int = 0, config: SynthConfig | None = None, workers: int = 1,
             tasks: tuple[str, ...] = tuple(TASKS)) -> Path:
    """Write the synthetic dataset to `out` (see the module docstring); returns `out`."""
    config = config or SynthConfig()
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ConfigError("tasks", f"unknown {sorted(unknown)}; known: {list(TASKS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, task, i, seed, config) for task in tasks for i in range(config.episodes_per_task)]
    if workers > 1:
        with process_pool(workers) as pool:
            list(pool.map(_render_job, jobs))
    else:
        for job in jobs:
            _render_job(job)
    info = {"generator": "sensorium synth rgbpc", "seed": seed, "tasks": {t: {"target": TASKS[t][0],
                                                                             "distractors": list(TASKS[t][1])}
                                                                         for t in tasks},
            "episodes_per_task": config.episodes_per_task, "steps": config.steps,
            "image_size": list(config.image_size), "points": config.points, "actions": list(ACTION_NAMES),
            "teacher": {"dim": TEACHER_DIM, "seed": TEACHER_SEED, "parts": list(PARTS)}}
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, out / "synth.json")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium synth rgbpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes-per-task", type=int, default=SynthConfig.episodes_per_task)
    parser.add_argument("--steps", type=int, default=SynthConfig.steps)
    parser.add_argument("--size", type=int, nargs=2, default=SynthConfig.image_size, metavar=("H", "W"))
    parser.add_argument("--points", type=int, default=SynthConfig.points)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    config = SynthConfig(args.episodes_per_task, args.steps, tuple(args.size), args.points)
    generate(args.out, args.seed, config, args.workers)
    print(f"[synth] rgbpc: {len(TASKS) * config.episodes_per_task} episodes of {config.steps} steps -> {args.out}")
    return 0
