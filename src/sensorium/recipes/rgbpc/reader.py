"""The rgbpc on-disk layout and its readers (the design note's layout, without pickle):

    ROOT/rgb/<task>/<episode>/step_XXXX.png      RGB frames, one per step
    ROOT/rgb/<task>/<episode>/camera.json        {"image_size": [H, W],
                                                  "intrinsics": {"fx", "fy", "cx", "cy"} (pixels),
                                                  "camera_to_world": {"step_XXXX": 4x4, ...} (optional)}
    ROOT/pc/<task>/<episode>/step_XXXX.ply       the step's point cloud: x, y, z (float) + red, green,
                                                 blue (uchar), binary or ascii PLY, in the world frame
    ROOT/pc/<task>/<episode>/step_XXXX.npz       uv [N, 2] float: each point's pixel in the original
                                                 frame; pc_feat [N, C_pc] float (optional: the point
                                                 encoder's per-point features)
    ROOT/actions/<task>/<episode>.csv            header `step,<component>,...`; one row per step
    FEATURES/<encoder>/<task>/<episode>.zarr     feature packs (`sensorium.data.packs`), FEATURES
                                                 defaulting to ROOT/features

uv follows OpenCV's pixel convention (centre of the top-left pixel at (0, 0), u the column), so a
point is inside the image when -0.5 <= u <= W - 0.5 and -0.5 <= v <= H - 0.5. `camera_to_world`
(when given) maps camera coordinates (x right, y down, z forward) to the point clouds' frame; the
evaluation's depth probe needs it.

Every check names the file and the problem (`DataError`): a missing or malformed camera.json,
actions CSV shorter than the episode, a malformed PLY, a point file without uv, uv outside the image,
an episode lacking an encoder's pack, packs whose frame paths disagree with each other or the frames.

`RgbpcSamples` reads the layout as samples of K points with each encoder's features around them,
one window at a time; `window_items` / `step_items` list the windows or steps it reads.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from sensorium.data.bad_samples import OnBadSample, handle_bad_sample
from sensorium.data.npz import read_npz
from sensorium.data.packs import FeaturePack, open_pack
from sensorium.errors import DataError

STEP_PATTERN = re.compile(r"step_(\d+)\.png$")
CAMERA_FILE = "camera.json"

Anchor = Literal["middle", "random", "first", "last"]
PointInput = Literal["pc_feat", "xyzrgb"]


# --- camera -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    image_size: tuple[int, int]  # (H, W)
    fx: float
    fy: float
    cx: float
    cy: float
    camera_to_world: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    """step stem -> (4, 4); empty when the file gives no extrinsics."""

    def to_json(self) -> dict:
        out = {"image_size": list(self.image_size), "intrinsics": {"fx": self.fx, "fy": self.fy, "cx": self.cx,
                                                                   "cy": self.cy}}
        if self.camera_to_world:
            out["camera_to_world"] = {k: np.asarray(v).tolist() for k, v in self.camera_to_world.items()}
        return out

    def depth(self, step: str, xyz: np.ndarray) -> np.ndarray | None:
        """(N,) camera-frame z of world points (N, 3); None without this step's extrinsics."""
        pose = self.camera_to_world.get(step)
        if pose is None:
            return None
        rotation, origin = pose[:3, :3], pose[:3, 3]
        return ((np.asarray(xyz, dtype=np.float64) - origin) @ rotation)[:, 2]


def read_camera(path: Path) -> Camera:
    if not path.is_file():
        raise DataError(path, "missing camera.json (intrinsics and image size of the episode's frames)")
    try:
        content = json.loads(path.read_text())
        H, W = (int(x) for x in content["image_size"])
        k = content["intrinsics"]
        fx, fy, cx, cy = (float(k[name]) for name in ("fx", "fy", "cx", "cy"))
        poses = {str(step): np.asarray(m, dtype=np.float64) for step, m in (content.get("camera_to_world") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(path, f"not a camera file ({type(e).__name__}: {e}); expected "
                              '{"image_size": [H, W], "intrinsics": {"fx", "fy", "cx", "cy"}}') from None
    if H <= 0 or W <= 0 or fx <= 0 or fy <= 0:
        raise DataError(path, f"image size {[H, W]} and focal lengths {[fx, fy]} must be positive")
    bad = [step for step, m in poses.items() if m.shape != (4, 4) or not np.isfinite(m).all()]
    if bad:
        raise DataError(path, f"camera_to_world of {bad[:3]} is not a finite 4x4 matrix")
    return Camera((H, W), fx, fy, cx, cy, poses)


# --- PLY --------------------------------------------------------------------------------------------
_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "u2", "uint16": "u2", "short": "i2", "int16": "i2",
              "uint": "u4", "uint32": "u4", "int": "i4", "int32": "i4"}


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY of points (N, 3) float32 and colours (N, 3) uint8 (written atomically)."""
    from sensorium.engine.checkpoint import atomic_write

    xyz, rgb = np.asarray(xyz, dtype="<f4"), np.asarray(rgb, dtype=np.uint8)
    vertex = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                       ("blue", "u1")])
    for i, name in enumerate("xyz"):
        vertex[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, i]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n").encode("ascii")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(vertex.tobytes())

    atomic_write(path, write)


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A PLY's vertices -> xyz (N, 3) float32 and rgb (N, 3) uint8 (binary little/big endian or ascii;
    other vertex properties are ignored, other elements must follow the vertices)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(path, f"cannot read point cloud ({e})") from None
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise DataError(path, "malformed PLY: no 'ply' magic or no end_header")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[end + len(b"end_header\n"):]
    fmt, count, props, in_vertex = None, None, [], False
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            in_vertex = words[1] == "vertex"
            if in_vertex:
                count = int(words[2]) if words[2].isdigit() else None
        elif words[0] == "property" and in_vertex:
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise DataError(path, f"malformed PLY: unsupported vertex property {line!r}")
            props.append((words[2], _PLY_TYPES[words[1]]))
    names = [p[0] for p in props]
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii") or count is None:
        raise DataError(path, f"malformed PLY: format {fmt!r}, vertex count {count!r}")
    if not {"x", "y", "z", "red", "green", "blue"} <= set(names):
        raise DataError(path, f"PLY vertices need x, y, z, red, green, blue; found {names}")
    try:
        if fmt == "ascii":
            rows = np.loadtxt(body.decode("ascii").splitlines()[:count], ndmin=2) if count else np.zeros((0, len(props)))
            if rows.shape != (count, len(props)):
                raise ValueError(f"{rows.shape[0]} rows of {rows.shape[1]} values")
            columns = {name: rows[:, i] for i, name in enumerate(names)}
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, order + code) for name, code in props])
            if len(body) < count * dtype.itemsize:
                raise ValueError(f"{len(body)} bytes of vertex data, {count} vertices need {count * dtype.itemsize}")
            vertex = np.frombuffer(body, dtype=dtype, count=count)
            columns = {name: vertex[name] for name in names}
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed PLY: {e}") from None
    xyz = np.stack([columns[c] for c in "xyz"], axis=1).astype(np.float32)
    rgb = np.stack([columns[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    if not np.isfinite(xyz).all():
        raise DataError(path, "PLY holds non-finite coordinates")
    return xyz, rgb


# --- frames -----------------------------------------------------------------------------------------
def read_frames(paths: list[Path]) -> torch.Tensor:
    """PNG/JPEG frames -> (B, 3, H, W) float32 in [0, 1] at their own size (all the same size)."""
    from PIL import Image, UnidentifiedImageError

    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(path, f"cannot decode frame ({type(e).__name__}: {e})") from None
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise DataError(paths[0].parent, f"frames of different sizes in one episode: {sorted(sizes)}")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)


# --- per-point sidecar ------------------------------------------------------------------------------
def read_point_sidecar(path: Path, num_points: int, image_size: tuple[int, int],
                       require_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """uv (N, 2) float32 and pc_feat (N, C) float32 or None, checked against the PLY's N and the image
    (read-only arrays when the file stores float32: views of its bytes)."""
    try:
        data = read_npz(path)  # np.load's arrays at a quarter of its cost (a sidecar is read per sample)
        uv = np.asarray(data["uv"], dtype=np.float32) if "uv" in data else None
        features = np.asarray(data["pc_feat"], dtype=np.float32) if "pc_feat" in data else None
    except FileNotFoundError:
        raise DataError(path, "missing point file (uv, pc_feat) next to the PLY") from None
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(path, f"cannot read point file ({type(e).__name__}: {e})") from None
    if uv is None:
        raise DataError(path, f"point file without uv (arrays: {sorted(data)}); point-to-patch "
                              "alignment needs each point's pixel")
    if uv.shape != (num_points, 2):
        raise DataError(path, f"uv has shape {list(uv.shape)}, the PLY holds {num_points} points")
    H, W = image_size
    outside = ~((uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5))
    if not np.isfinite(uv).all() or outside.any():
        first = uv[np.flatnonzero(outside | ~np.isfinite(uv).all(axis=1))[0]].tolist()
        raise DataError(path, f"{int(outside.sum())} uv outside the {W}x{H} image (e.g. {first}; pixel centres "
                              "at 0..W-1, the image spans -0.5..W-0.5)")
    if features is None and require_features:
        raise DataError(path, "no pc_feat (the point encoder's features); set model point_input: xyzrgb to align "
                              "to raw points instead")
    if features is not None:
        if features.ndim != 2 or features.shape[0] != num_points:
            raise DataError(path, f"pc_feat has shape {list(features.shape)}, expected [{num_points}, C]")
        if not np.isfinite(features).all():
            raise DataError(path, "pc_feat holds NaN or infinite values")
    return uv, features


# --- actions ----------------------------------------------------------------------------------------
def read_actions(path: Path, steps: list[str]) -> tuple[np.ndarray, list[str]]:
    """(S, A) float32 actions of the episode's steps in order, and the component names."""
    if not path.is_file():
        raise DataError(path, "missing actions CSV")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(path, f"cannot read ({e})") from None
    if not rows or not rows[0] or rows[0][0] != "step" or len(rows[0]) < 2:
        raise DataError(path, f"header must be step,<component>,...; found {rows[0] if rows else 'nothing'}")
    names, values = rows[0][1:], {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            values[int(row[0])] = [float(x) for x in row[1:]]
        except (ValueError, IndexError):
            raise DataError(path, f"line {line}: not a step number and {len(names)} numbers: {row}") from None
        if len(values[int(row[0])]) != len(names):
            raise DataError(path, f"line {line}: {len(row) - 1} components, the header names {len(names)}")
    wanted = [int(STEP_PATTERN.search(f"{s}.png").group(1)) for s in steps]
    missing = [s for s in wanted if s not in values]
    if missing:
        raise DataError(path, f"{len(values)} action rows, shorter than the episode's {len(steps)} steps "
                              f"(no action for step {missing[0]}{' and more' if len(missing) > 1 else ''})")
    actions = np.asarray([values[s] for s in wanted], dtype=np.float32)
    if not np.isfinite(actions).all():
        raise DataError(path, "actions hold NaN or infinite values")
    return actions, names


# --- episodes -----------------------------------------------------------------------------------------
@dataclass
class Episode:
    """One episode of the layout, checked: its frames, camera, actions and (once attached) packs."""

    root: Path
    task: str
    name: str
    steps: list[str]  # step stems in order ("step_0000", ...)
    camera: Camera
    actions: np.ndarray | None  # (S, A)
    packs: dict[str, FeaturePack] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"

    @property
    def frame_paths(self) -> list[str]:
        """Paths relative to ROOT/rgb, as the packs record them."""
        return [f"{self.task}/{self.name}/{s}.png" for s in self.steps]

    def frame_file(self, i: int) -> Path:
        return self.root / "rgb" / self.task / self.name / f"{self.steps[i]}.png"

    def ply_file(self, i: int) -> Path:
        return self.root / "pc" / self.task / self.name / f"{self.steps[i]}.ply"

    def sidecar_file(self, i: int) -> Path:
        return self.root / "pc" / self.task / self.name / f"{self.steps[i]}.npz"

    @property
    def actions_file(self) -> Path:
        return self.root / "actions" / self.task / f"{self.name}.csv"


def episode_steps(episode_dir: Path) -> list[str]:
    """The step stems of an episode's frames, in step order."""
    found = sorted((int(m.group(1)), p.stem) for p in episode_dir.iterdir() if (m := STEP_PATTERN.search(p.name)))
    return [stem for _, stem in found]


def find_episodes(root: str | Path) -> list[tuple[str, str]]:
    """(task, episode) of every episode directory under ROOT/rgb, sorted."""
    rgb = Path(root) / "rgb"
    if not rgb.is_dir():
        raise DataError(rgb, "no rgb/ directory (expected ROOT/rgb/<task>/<episode>/step_XXXX.png)")
    found = [(t.name, e.name) for t in sorted(rgb.iterdir()) if t.is_dir() for e in sorted(t.iterdir()) if e.is_dir()]
    if not found:
        raise DataError(rgb, "no episodes (expected ROOT/rgb/<task>/<episode>/step_XXXX.png)")
    return found


def read_episode(root: str | Path, task: str, name: str, with_actions: bool = True) -> Episode:
    """An episode's frame list, camera and actions, checked (frames and point files are opened later)."""
    root = Path(root)
    directory = root / "rgb" / task / name
    steps = episode_steps(directory)
    if not steps:
        raise DataError(directory, "no frames (step_XXXX.png)")
    camera = read_camera(directory / CAMERA_FILE)
    episode = Episode(root, task, name, steps, camera, None)
    if with_actions:
        episode.actions, _ = read_actions(episode.actions_file, steps)
    return episode


def pack_path(features_root: str | Path, encoder: str, task: str, episode: str) -> Path:
    return Path(features_root) / encoder / task / f"{episode}.zarr"


def attach_packs(episode: Episode, features_root: str | Path, encoders: list[str]) -> None:
    """Open the episode's pack of every encoder and check them against the episode and each other:
    one pack per encoder, the same frame paths in the same order (those of the frames on disk), and
    a transform made for the episode's image size."""
    for encoder in encoders:
        path = pack_path(features_root, encoder, episode.task, episode.name)
        if not path.exists():
            raise DataError(path, f"episode {episode.key} lacks the pack of encoder {encoder!r} "
                                  f"(run `sensorium extract rgbpc` for it)")
        pack = open_pack(path)
        if pack.frame_paths != episode.frame_paths:
            first = next((i for i, (a, b) in enumerate(zip(pack.frame_paths, episode.frame_paths)) if a != b),
                         min(len(pack.frame_paths), len(episode.frame_paths)))
            other = f"{encoders[0]}'s pack" if episode.packs else "the frames on disk"
            mine = pack.frame_paths[first] if first < len(pack.frame_paths) else "nothing"
            theirs = episode.frame_paths[first] if first < len(episode.frame_paths) else "nothing"
            raise DataError(path, f"frame paths disagree with {other} at frame {first}: {mine!r} vs {theirs!r}")
        if tuple(pack.transform.image_size) != episode.camera.image_size:
            raise DataError(path, f"made for {list(pack.transform.image_size)} images; camera.json says "
                                  f"{list(episode.camera.image_size)}")
        episode.packs[encoder] = pack


# --- samples ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    episode: int
    start: int  # the window's first frame
    length: int  # the window's frames (T)
    anchor: int  # the anchor's offset in the window; -1: drawn at random at each access
    whole_window: bool  # read all T frames (temporal pooling), or only the anchor frame


class RgbpcSamples(Dataset):
    """Samples of K points around one anchor frame each: one anchor frame of one window (or of one
    step) of an episode, as

        feat/<encoder>   float16 (T, Hf, Wf, C)  the pack's frames of the window (T = 1 without temporal
                                                 pooling: only the anchor frame is read)
        grid/<encoder>   float32 (K, 2)          the K points' positions on that encoder's grid (x, y)
        anchor           int64 ()                the anchor frame's index in feat/* (0 when T = 1)
        uv               float32 (K, 2)          the points' pixels in the original frame
        pc_feat          float32 (K, C_pc)       the point encoder's features (or xyzrgb (K, 6): xyz and
                                                 rgb in [0, 1], when the data has none)
        xyz              float32 (K, 3)          world coordinates; depth float32 (K,) camera z (NaN
                                                 without extrinsics)
        action           float32 (A,)            the step's action; task int64 (); episode int64 ()
        frame_id         int64 ()                unique per (episode, step): pairs of one frame
        patch_px         float32 ()              the coarsest encoder's cell size in pixels (the
                                                 same-patch negative mask and "hit within one patch")
        image            uint8 (3, H, W)         the anchor frame's pixels (distillation and test only)

    K points are drawn among the frame's points that every encoder's crop contains: at random for
    training (torch's RNG, new each epoch and per worker), seeded by the sample's position for
    validation and test (every evaluation sees the same points). Workers open packs lazily (the
    `FeaturePack` handles are opened in the worker on first read) and read only the window they need.
    """

    def __init__(self, episodes: list[Episode], items: list[Item], encoders: list[str], points: int,
                 point_input: PointInput = "pc_feat", images: bool = False, seed: int | None = None,
                 on_bad_sample: OnBadSample = "error"):
        """seed: None draws points and random anchors afresh at every access (training); an int
        makes sample i always the same (evaluation)."""
        self.episodes, self.items, self.encoders = episodes, items, list(encoders)
        self.points, self.point_input, self.images = points, point_input, images
        self.seed, self.on_bad_sample = seed, on_bad_sample
        self.tasks = sorted({e.task for e in episodes})
        self.patch_px = max(max(e.packs[enc].transform.cell_pixels) for e in episodes for enc in self.encoders)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            return self._sample(index)
        except DataError as e:
            handle_bad_sample(e, self.on_bad_sample)
            return None

    def _random(self, index: int) -> torch.Generator | None:
        return None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def _sample(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        episode = self.episodes[item.episode]
        generator = self._random(index)
        anchor = item.anchor if item.anchor >= 0 else int(torch.randint(item.length, (1,), generator=generator))
        frame = item.start + anchor
        first, count = (item.start, item.length) if item.whole_window else (frame, 1)
        xyz, rgb = read_ply(episode.ply_file(frame))
        uv, pc_feat = read_point_sidecar(episode.sidecar_file(frame), len(xyz), episode.camera.image_size,
                                         require_features=self.point_input == "pc_feat")
        packs = [episode.packs[enc] for enc in self.encoders]
        grids = [p.transform.to_grid(uv) for p in packs]  # every point on each encoder's grid, once
        usable = np.flatnonzero(np.logical_and.reduce([p.transform.on_grid(g) for p, g in zip(packs, grids)]))
        if len(usable) == 0:
            raise DataError(episode.sidecar_file(frame), "no point lies inside every encoder's crop")
        if len(usable) >= self.points:
            chosen = usable[torch.randperm(len(usable), generator=generator)[: self.points].numpy()]
        else:  # a sparse frame: repeat points (the same-patch mask keeps repeats out of the negatives)
            chosen = usable[torch.randint(len(usable), (self.points,), generator=generator).numpy()]
        sample: dict[str, torch.Tensor] = {}
        for encoder, pack, grid in zip(self.encoders, packs, grids):
            window = pack.frames(first, first + count)  # (T, Hf, Wf, C), one contiguous read
            if not np.isfinite(window).all():
                raise DataError(pack.path, f"NaN or infinite features in frames {first}..{first + count - 1}")
            sample[f"feat/{encoder}"] = torch.from_numpy(np.ascontiguousarray(window))
            sample[f"grid/{encoder}"] = torch.from_numpy(grid[chosen].astype(np.float32))
        if self.point_input == "pc_feat":
            sample["pc_feat"] = torch.from_numpy(pc_feat[chosen])
        else:
            sample["pc_feat"] = torch.from_numpy(np.concatenate([xyz[chosen], rgb[chosen] / 255.0], 1).astype(np.float32))
        step = episode.steps[frame]
        depth = episode.camera.depth(step, xyz[chosen])
        sample.update(
            uv=torch.from_numpy(uv[chosen]),
            xyz=torch.from_numpy(xyz[chosen]),
            depth=torch.from_numpy((depth if depth is not None else np.full(len(chosen), np.nan)).astype(np.float32)),
            anchor=torch.tensor(anchor if item.whole_window else 0),
            action=torch.from_numpy(episode.actions[frame]) if episode.actions is not None else torch.zeros(0),
            task=torch.tensor(self.tasks.index(episode.task)),
            episode=torch.tensor(item.episode),
            frame_id=torch.tensor(item.episode * 100_000 + frame),
            patch_px=torch.tensor(self.patch_px, dtype=torch.float32),
        )
        if self.images:
            sample["image"] = (read_frames([episode.frame_file(frame)])[0] * 255).round().to(torch.uint8)
        return sample


# --- sample items -----------------------------------------------------------------------------
def window_items(episodes: list[Episode], members: list[int], encoder: str, anchor: Anchor,
                 temporal: bool) -> list[Item]:
    """One item per pack window of each member episode (the windows index of `encoder`'s packs)."""
    items = []
    for e in members:
        for frames in episodes[e].packs[encoder].windows:
            T = len(frames)
            offset = {"first": 0, "middle": T // 2, "last": T - 1, "random": -1}[anchor]
            items.append(Item(e, int(frames[0]), T, offset, temporal))
    return items


def step_items(episodes: list[Episode], members: list[int], window: int, temporal: bool) -> list[Item]:
    """One item per step of each member episode; with temporal pooling, the window of `window`
    frames around the step (shifted to fit the episode), the step as anchor."""
    items = []
    for e in members:
        F = len(episodes[e].steps)
        for f in range(F):
            if temporal and F >= window:
                start = min(max(f - window // 2, 0), F - window)
                items.append(Item(e, start, window, f - start, True))
            else:
                items.append(Item(e, f, 1, 0, False))
    return items
