"""Synthetic tactile data in the TacQuad layout, as AnyTouch reads it.

    sensorium synth tactile --out DIR [--seed S] [--items-indoor N] [--items-outdoor N]
                            [--frames T] [--size PX]

writes

    DIR/contact_indoor.csv, DIR/contact_outdoor.csv   one row per item, NO header (AnyTouch parses every
        row as data): item, gs_start, gs_end, digit_start, digit_end, duragel_start, duragel_end;
        inclusive ranges of the frames in contact, per sensor
    DIR/data_{indoor,outdoor}/<item>/{gelsight,digit,duragel}/<t>.png   frame t of the recording,
        t = 0..T-1 without zero padding (AnyTouch builds the path as str(t) + '.png')
    DIR/index.csv     the generic index: one row per 4-frame window inside a contact range,
                      header frame_0,frame_1,frame_2,frame_3,sensor,label (paths relative to DIR)
    DIR/labels.csv    scene,item,label,indenter: the indenter class of each item (evaluation only)
    DIR/frame_labels.csv   one row per frame of every recording: what the generator knows of the
                      contact (evaluation only; `sensorium.recipes.tactile.reader.read_frame_labels`):
                      path,scene,item,sensor,frame,force_n,contact_x_mm,contact_y_mm,slip
    DIR/synth.json    the generator's settings, the class names and each sensor's frame size (H, W)

Each item is one indenter pressed into the gel of each of the three sensors (like TacQuad's aligned
recordings of one object), with its own motion per sensor. Most recordings slide and rotate the
indenter while pressing; `static_fraction` of them (an exact share per scene, drawn after the labels
from the dataset seed) press in place: no slide, no rotation, so the gel's markers do not shear. The
sliding ones draw every random number exactly as before static contacts existed. A frame is rendered from a gel height
map: the indenter (sphere, edge, cylinder, textured grid, ring or cross) at a depth, position and
angle that change linearly over time (press, slide, rotate), so frame t+1 is predictable from
frames t-2..t but differs from frame t. Shading is photometric stereo-like: surface normals of the
height map lit by three coloured lights; then gel texture, printed markers that shear with the
contact, sensor noise. Sensors differ in resolution and aspect, light layout and colours, markers,
gel softness and noise; the outdoor scene adds ambient light and noise.

Frame labels (frame_labels.csv), from the gel height map before blurring:

    force_n        normal force in newtons: a Winkler (elastic foundation) gel, pressure = stiffness x
                   indentation depth, so force = stiffness x the indented volume; stiffness per sensor
                   (`SensorStyle.stiffness`, N/mm^3). 0 without contact.
    contact_x_mm, contact_y_mm   the contact centre: the centre of pressure (depth-weighted centroid of
                   the indentation) in mm from the frame's top-left corner, x right, y down, in the raw
                   frame (before any resize); empty without contact.
    slip           1 for a contact frame of a sliding recording, 0 for one of a static (pressed in
                   place) recording; empty without contact.

Lengths: BASE px of a frame are PAD_MM millimetres at every --size (a 64 px GelSight frame, 48 x 64 px,
is 12 x 16 mm, about a GelSight Mini's or a DIGIT's pad); the indentation depth is on the same scale.

Rendering is vectorised over frames and pixels (numpy + scipy.ndimage) and deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from sensorium.errors import ConfigError

SENSORS = ("gelsight", "digit", "duragel")  # sensor ids 0, 1, 2 (sensorium.recipes.tactile.reader.SENSORS)
SCENES = ("indoor", "outdoor")
INDENTERS = ("sphere", "edge", "cylinder", "grid", "ring", "cross")
CSV_PREFIX = {"gelsight": "gs", "digit": "digit", "duragel": "duragel"}
BASE = 64.0  # lengths below are in pixels of a 64 px sensor and scale with --size
PAD_MM = 16.0  # BASE px are this many millimetres (frame labels in mm and newtons)
FRAME_LABELS = "frame_labels.csv"
FRAME_LABEL_COLUMNS = ("path", "scene", "item", "sensor", "frame", "force_n", "contact_x_mm", "contact_y_mm", "slip")


@dataclass(frozen=True)
class SensorStyle:
    aspect: tuple[float, float]  # (H, W) relative to --size: GelSight Mini is landscape, DIGIT portrait
    light_azimuth: tuple[float, float, float]  # degrees
    light_elevation: float  # degrees
    light_rgb: tuple[tuple[float, float, float], ...]  # colour of each light
    background: tuple[float, float, float]
    gain: float  # shading strength
    marker_spacing: float  # px at 64 px; 0 = no markers
    gel_blur: float  # px: softer gels spread the imprint
    noise: float  # std of per-pixel sensor noise
    stiffness: float  # N/mm^3: pressure per mm of indentation (Winkler gel); softer gels give less force


STYLES = {
    # Three lights in a circle (red, green, blue) and a marker grid.
    "gelsight": SensorStyle((0.75, 1.0), (90.0, 210.0, 330.0), 35.0,
                            ((0.9, 0.15, 0.1), (0.1, 0.85, 0.2), (0.15, 0.2, 0.95)),
                            (0.42, 0.44, 0.50), 0.55, 8.0, 1.0, 0.010, 1.0),
    # LEDs along one side: a strong illumination gradient, no markers.
    "digit": SensorStyle((1.0, 0.75), (60.0, 90.0, 120.0), 25.0,
                         ((0.95, 0.2, 0.2), (0.2, 0.9, 0.3), (0.2, 0.3, 0.95)),
                         (0.30, 0.32, 0.38), 0.65, 0.0, 1.3, 0.012, 1.4),
    # Muted white/amber/cyan lights, greenish gel, dense markers, soft gel.
    "duragel": SensorStyle((1.0, 1.0), (0.0, 120.0, 240.0), 45.0,
                           ((0.8, 0.8, 0.7), (0.9, 0.55, 0.2), (0.2, 0.65, 0.8)),
                           (0.33, 0.45, 0.40), 0.9, 6.0, 1.5, 0.014, 0.6),
}


def sensor_shape(sensor: str, size: int) -> tuple[int, int]:
    """(H, W) of one sensor's frames at base size `size` (multiples of 4)."""
    ah, aw = STYLES[sensor].aspect
    return int(round(size * ah / 4) * 4), int(round(size * aw / 4) * 4)


# --- indenter height profiles: f(u, v) >= 0 in indenter coordinates, tip height f_max -------------------
def _capsule(u: np.ndarray, v: np.ndarray, radius: float, length: float) -> np.ndarray:
    along = np.maximum(np.abs(v) - length / 2, 0.0)
    return np.sqrt(np.maximum(radius**2 - u**2 - along**2, 0.0))


def indenter_profile(kind: str, u: np.ndarray, v: np.ndarray, scale: float, rng: np.random.Generator):
    """Height of the indenter surface above its lowest point, and its tip height. Shapes are drawn
    with random sizes so that size alone does not give the class away."""
    s = scale * rng.uniform(0.8, 1.25)
    if kind == "sphere":
        r = 11.0 * s
        return np.sqrt(np.maximum(r**2 - u**2 - v**2, 0.0)), r
    if kind == "edge":  # a straight wedge crossing the whole pad
        half, slope = 6.0 * s, 0.7
        return slope * np.maximum(half - np.abs(u), 0.0), slope * half
    if kind == "cylinder":  # lying on its side, rounded ends
        r = 6.0 * s
        return _capsule(u, v, r, 22.0 * s), r
    if kind == "grid":  # flat square pad with a grid of bumps
        half, period, bump, pad = 12.0 * s, 5.0 * s, 1.6 * s, 6.0 * s
        inside = 1.0 / (1.0 + np.exp((np.maximum(np.abs(u), np.abs(v)) - half) / (0.8 * s)))
        texture = (0.5 + 0.5 * np.cos(2 * np.pi * u / period)) * (0.5 + 0.5 * np.cos(2 * np.pi * v / period))
        return inside * (pad + bump * texture), pad + bump
    if kind == "ring":
        r, tube = 9.0 * s, 3.0 * s
        return np.sqrt(np.maximum(tube**2 - (np.hypot(u, v) - r) ** 2, 0.0)), tube
    if kind == "cross":
        r, length = 3.5 * s, 26.0 * s
        return np.maximum(_capsule(u, v, r, length), _capsule(v, u, r, length)), r
    raise ConfigError("indenter", f"unknown indenter {kind!r}; known: {INDENTERS}")


# --- one recording ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContactLabels:
    """What the generator knows of each frame's contact (see the module docstring)."""

    force_n: np.ndarray  # (T,) newtons, 0 without contact
    centre_mm: np.ndarray  # (T, 2) centre of pressure (x, y) in mm from the top-left corner; NaN without contact
    slides: bool  # the indenter slides over the gel (False: pressed in place)

    @property
    def in_contact(self) -> np.ndarray:
        return self.force_n > 0


def contact_labels(height: np.ndarray, sensor: str, size: int, slides: bool) -> ContactLabels:
    """Force and centre of pressure of indentation depths `height` (T, H, W) in px at base size `size`."""
    mm = PAD_MM / size  # mm per px, laterally and in depth
    volume = height.sum(axis=(1, 2))  # (T,) px^3 per px of depth: sum of depths over the pixels
    force = STYLES[sensor].stiffness * volume * mm**3
    yy, xx = np.mgrid[0:height.shape[1], 0:height.shape[2]].astype(np.float64)  # (H, W)
    with np.errstate(invalid="ignore", divide="ignore"):  # no contact: 0 / 0 -> NaN, the "empty" centre
        centre = np.stack([(height * (xx + 0.5)).sum(axis=(1, 2)), (height * (yy + 0.5)).sum(axis=(1, 2))],
                          axis=1) / volume[:, None]  # (T, 2) px, pixel centres at +0.5
    return ContactLabels(force, centre * mm, slides)


def render_recording(kind: str, sensor: str, outdoor: bool, frames: int, size: int,
                     rng: np.random.Generator, slides: bool = True) -> tuple[np.ndarray, int, ContactLabels]:
    """(frames, H, W, 3) uint8 frames of one indenter on one sensor, the first contact frame and
    each frame's contact labels. `slides=False` presses the indenter in place (no slide, no
    rotation); it draws the same random numbers, so the rest of the recording is unchanged."""
    style = STYLES[sensor]
    H, W = sensor_shape(sensor, size)
    scale = size / BASE
    T = frames
    t = np.arange(T, dtype=np.float64)[:, None, None]  # (T, 1, 1)

    # Motion, linear in time: press to full depth over a few frames, slide, rotate.
    first_contact = int(rng.integers(1, 3))  # frames before it are the approach (no contact)
    press_frames = rng.uniform(3.0, 6.0)
    # A static contact draws its speed and spin all the same (then zeroes them), so every other draw stays.
    speed = rng.uniform(1.5, 3.0) * scale * slides  # px / frame
    heading = rng.uniform(0, 2 * np.pi)
    centre0 = np.array([rng.uniform(0.35, 0.65) * W, rng.uniform(0.35, 0.65) * H])
    centre0 -= np.array([np.cos(heading), np.sin(heading)]) * speed * (T - 1) / 2  # path crosses the middle
    angle0, spin = rng.uniform(0, np.pi), np.deg2rad(rng.uniform(4.0, 10.0)) * rng.choice([-1, 1]) * slides
    cx = centre0[0] + np.cos(heading) * speed * t
    cy = centre0[1] + np.sin(heading) * speed * t
    angle = angle0 + spin * t

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)  # (H, W)
    dx, dy = xx[None] - cx, yy[None] - cy  # (T, H, W)
    u = np.cos(angle) * dx + np.sin(angle) * dy  # indenter frame, rotated with it
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    profile, tip = indenter_profile(kind, u, v, scale, rng)  # (T, H, W)
    full_depth = max(rng.uniform(0.18, 0.32) * tip, rng.uniform(1.5, 2.5) * scale)  # every shape shows
    depth = full_depth * np.clip((t - first_contact + 1) / press_frames, 0.0, 1.0)  # (T, 1, 1)
    height = np.maximum(profile - (tip - depth), 0.0)  # (T, H, W): gel pushed in by the indenter
    labels = contact_labels(height, sensor, size, slides)
    height = gaussian_filter(height, sigma=(0, style.gel_blur * scale, style.gel_blur * scale))

    # Photometric shading: normals of the height map, three coloured lights; flat gel shades to 0.
    gy, gx = np.gradient(height, axis=(1, 2))
    norm = np.sqrt(gx**2 + gy**2 + 1.0)
    normal = np.stack([-gx / norm, -gy / norm, 1.0 / norm], axis=-1)  # (T, H, W, 3)
    az, el = np.deg2rad(np.array(style.light_azimuth)), np.deg2rad(style.light_elevation)
    lights = np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.full(3, np.sin(el))], axis=1)
    shading = normal @ lights.T - np.sin(el)  # (T, H, W, 3 lights)
    image = style.gain * 2.0 * shading @ np.array(style.light_rgb)  # (T, H, W, 3 channels)

    # Illumination falloff and gel texture: fixed over the recording.
    background = np.array(style.background)[None, None] * np.ones((H, W, 1))
    if sensor == "digit":  # LEDs on the bottom edge
        background *= (0.75 + 0.45 * (yy / H))[..., None]
    else:
        r2 = ((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2
        background *= (1.1 - 0.8 * r2)[..., None]
    texture = gaussian_filter(rng.normal(size=(H, W)), 2.5 * scale) * 0.25
    background = background + texture[..., None] * np.array([0.05, 0.05, 0.06])
    if outdoor:  # sunlight leaking through the gel
        background = background + rng.uniform(0.04, 0.10) * np.array([1.0, 0.95, 0.8])
    image = image + background[None]

    if style.marker_spacing:
        # Markers move with the gel: inside the contact they follow the indenter's slide.
        contact = gaussian_filter((height > 0.05).astype(np.float64), sigma=(0, 3 * scale, 3 * scale))
        moved = np.clip(t - first_contact, 0, None) * speed * 0.6 * contact  # (T, H, W)
        mx = xx[None] - np.cos(heading) * moved
        my = yy[None] - np.sin(heading) * moved
        spacing, offset = style.marker_spacing * scale, rng.uniform(0, style.marker_spacing * scale, 2)
        px = np.mod(mx - offset[0], spacing) - spacing / 2
        py = np.mod(my - offset[1], spacing) - spacing / 2
        dots = np.exp(-(px**2 + py**2) / (2 * (0.7 * scale) ** 2))
        image = image * (1.0 - 0.65 * dots[..., None])

    noise = style.noise * (1.3 if outdoor else 1.0)
    image = image + rng.normal(scale=noise, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), first_contact, labels


def _label_rows(scene: str, item: str, sensor: str, labels: ContactLabels) -> list[list]:
    """frame_labels.csv rows of one recording: empty contact and slip cells without contact."""
    rows = []
    for t, (force, (x, y), touching) in enumerate(zip(labels.force_n, labels.centre_mm, labels.in_contact)):
        contact = [f"{x:.3f}", f"{y:.3f}", int(labels.slides)] if touching else ["", "", ""]
        rows.append([f"data_{scene}/{item}/{sensor}/{t}.png", scene, item, sensor, t, f"{force:.4f}",
                     *contact])
    return rows


# --- the dataset ---------------------------------------------------------------------------------------
def generate(out: str | Path, seed: int = 0, items_indoor: int = 60, items_outdoor: int = 20, frames: int = 8,
             size: int = 64, classes: tuple[str, ...] = INDENTERS, static_fraction: float = 0.25) -> dict:
    """Write the dataset (see the module docstring) and return the settings written to synth.json."""
    if not 0.0 <= static_fraction <= 1.0:
        raise ConfigError("static_fraction", f"must be in [0, 1], got {static_fraction}")
    if frames < 4:
        raise ConfigError("frames", f"a recording needs at least 4 frames (one window t-3..t), got {frames}")
    if size < 16 or size % 4:
        raise ConfigError("size", f"must be a multiple of 4 and at least 16, got {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {"indoor": items_indoor, "outdoor": items_outdoor}
    labels = {scene: rng.permutation(np.arange(n) % len(classes)) for scene, n in counts.items()}  # balanced
    # After the labels, so they stay as they were: an exact share of each scene's recordings pressed in place.
    static = {scene: (rng.permutation(n * len(SENSORS)) < round(static_fraction * n * len(SENSORS))).reshape(
        n, len(SENSORS)) for scene, n in counts.items()}  # (items, sensors) bool

    index_rows, label_rows, frame_rows = [], [], []
    for scene_id, scene in enumerate(SCENES):
        contact_rows = []
        for item_id in range(counts[scene]):
            item, label = f"{scene}_{item_id:03d}", int(labels[scene][item_id])
            label_rows.append([scene, item, label, classes[label]])
            row = [item]
            for sensor_id, sensor in enumerate(SENSORS):
                recording_rng = np.random.default_rng([seed, scene_id, item_id, sensor_id])
                images, start, contact = render_recording(classes[label], sensor, scene == "outdoor", frames,
                                                          size, recording_rng,
                                                          slides=not static[scene][item_id, sensor_id])
                frame_rows += _label_rows(scene, item, sensor, contact)
                folder = out / f"data_{scene}" / item / sensor
                folder.mkdir(parents=True, exist_ok=True)
                for t, image in enumerate(images):
                    Image.fromarray(image).save(folder / f"{t}.png", compress_level=1)
                end = frames - 1
                row += [start, end]
                for last in range(start + 3, end + 1):
                    paths = [f"data_{scene}/{item}/{sensor}/{k}.png" for k in range(last - 3, last + 1)]
                    index_rows.append([*paths, sensor, label])
            contact_rows.append(row)
        with open(out / f"contact_{scene}.csv", "w", newline="") as f:
            csv.writer(f).writerows(contact_rows)  # no header, as in TacQuad

    with open(out / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame_0", "frame_1", "frame_2", "frame_3", "sensor", "label"])
        writer.writerows(index_rows)
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scene", "item", "label", "indenter"])
        writer.writerows(label_rows)
    with open(out / FRAME_LABELS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FRAME_LABEL_COLUMNS)
        writer.writerows(frame_rows)
    settings = {
        "seed": seed, "items_indoor": items_indoor, "items_outdoor": items_outdoor, "frames": frames,
        "size": size, "static_fraction": static_fraction, "classes": list(classes), "sensors": list(SENSORS),
        "frame_sizes": {sensor: list(sensor_shape(sensor, size)) for sensor in SENSORS},
        "windows": len(index_rows),
    }
    (out / "synth.json").write_text(json.dumps(settings, indent=2) + "\n")
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium synth tactile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (the TacQuad root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items-indoor", type=int, default=60, help="items (indenters) in data_indoor")
    parser.add_argument("--items-outdoor", type=int, default=20, help="items (indenters) in data_outdoor")
    parser.add_argument("--frames", type=int, default=8, help="frames per recording (at least 4)")
    parser.add_argument("--size", type=int, default=64,
                        help="base frame size in px (sensors differ in aspect)")
    parser.add_argument("--static-fraction", type=float, default=0.25,
                        help="share of recordings pressed in place (slip 0); the others slide (slip 1)")
    args = parser.parse_args(argv)
    settings = generate(args.out, args.seed, args.items_indoor, args.items_outdoor, args.frames, args.size,
                        static_fraction=args.static_fraction)
    items = args.items_indoor + args.items_outdoor
    print(f"wrote {items} items x {len(SENSORS)} sensors x {args.frames} frames "
          f"({settings['windows']} 4-frame windows) to {args.out}")
    return 0
