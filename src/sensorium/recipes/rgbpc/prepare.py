"""`sensorium prepare rgbpc --input NOTE_ROOT --out DIR`: the design note's layout -> the rgbpc layout.

    sensorium prepare rgbpc --input NOTE_ROOT --out DIR [--intrinsics FX FY CX CY]
        [--encoder NAME=FEATURE_DIR ...] [--resize H W] [--crop TOP LEFT H W | --center-crop H W]
        [--stride S] [--uv-offset DU DV] [--actions DIR] [--window-stride S]

Input (the note's layout):

    NOTE_ROOT/rgb_dataset/RGB/<task>/<episode>/*.png|jpg                frames
    NOTE_ROOT/rgb_dataset/features_<...>/<task>/<episode>.pt            one directory per encoder:
        {"per_frame_features": [W, T, Hf, Wf, C], "frame_paths": W lists of T paths, "meta": {...}}
    NOTE_ROOT/pc_dataset/PC/ULIP_FEAT_PT_POINT/<task>/<episode>/step_XXXX.ply.ulip_*.pt
        {"pc": [N, 6] xyz + rgb, "uv": [N, 2], "pc_feat": [N, C_pc]}

Every `.pt` is read with `torch.load(weights_only=True)` (memory-mapped): tensors, lists, dicts and
strings only, no code runs. Output: DIR/rgb/<task>/<episode>/step_XXXX.png (+ camera.json),
DIR/pc/<task>/<episode>/step_XXXX.ply + .npz (uv, pc_feat), DIR/features/<encoder>/<task>/<episode>.zarr
(each frame's features once: overlapping windows of the .pt are not stored twice; duplicates of a
frame must agree), DIR/actions/... when --actions names a directory of `<task>/<episode>.csv`, and
DIR/prepare.json.

**What `meta` must hold to map uv onto the grid** (the first key found is used; a flag supplies what
it lacks, a flag given overrides it for every encoder):

    image size   meta image_size | orig_size | original_size: (H, W) of the frames the uv refer to
                 (default: the frames' own size)
    resize       meta resize | resized_size | input_size: (H', W') the whole frame was resized to
                 (--resize; default: no resize)
    crop         meta crop: (top, left, h, w) in the resized image, or center_crop: (h, w)
                 (--crop / --center-crop; default: the whole resized image)
    stride       meta patch_size | stride | patch: pixels per grid cell of the cropped image
                 (--stride; default: the cropped size / the feature grid, when that divides exactly)

Frame names: `step_XXXX` keeps its number; a name of digits is that step; any other name takes its
position in the sorted directory. uv are taken in OpenCV's convention (pixel centres at integers);
`--uv-offset -0.5 -0.5` converts uv whose pixel centres are at .5. Colours in [0, 1] are scaled
to 0-255. Camera intrinsics come from meta["intrinsics"] {fx, fy, cx, cy} or --intrinsics.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import PackWriter, window_index
from sensorium.engine.checkpoint import atomic_write_json
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.rgbpc.reader import CAMERA_FILE, read_actions, write_ply

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
POINT_FILE = re.compile(r"^(?P<step>.+?)\.ply\.ulip_.*\.pt$")
_KEYS = {"image_size": ("image_size", "orig_size", "original_size"), "resize": ("resize", "resized_size", "input_size"),
         "stride": ("patch_size", "stride", "patch")}


def load_pt(path: Path) -> dict:
    """A note's .pt file as a dict, with weights_only=True (no pickled code runs)."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as e:
        reason = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                      str(e).splitlines()[0] if str(e) else "")
        raise DataError(path, f"cannot load with weights_only=True ({type(e).__name__}: {reason})") from None
    if not isinstance(content, dict):
        raise DataError(path, f"expected a dict, got {type(content).__name__}")
    return content


def step_names(files: list[Path]) -> dict[str, str]:
    """Frame file stem -> step stem (`step_XXXX`), by the rules of the module docstring."""
    stems = sorted(f.stem for f in files)
    names = {}
    for position, stem in enumerate(stems):
        if m := re.fullmatch(r"step_(\d+)", stem):
            names[stem] = f"step_{int(m.group(1)):04d}"
        elif stem.isdigit():
            names[stem] = f"step_{int(stem):04d}"
        else:
            names[stem] = f"step_{position:04d}"
    if len(set(names.values())) != len(names):
        raise DataError(files[0].parent, "frame names map onto the same step twice")
    return names


def grid_transform(meta: dict, image_size: tuple[int, int], grid: tuple[int, int], flags: argparse.Namespace,
                   path: Path) -> GridTransform:
    def first(kind: str):
        return next((meta[k] for k in _KEYS[kind] if k in meta), None)

    size = tuple(int(x) for x in (first("image_size") or image_size))
    resize = tuple(flags.resize) if flags.resize else tuple(int(x) for x in (first("resize") or size))
    if flags.crop:
        crop = tuple(flags.crop)
    elif flags.center_crop or "center_crop" in meta:
        h, w = (int(x) for x in (flags.center_crop or meta["center_crop"]))
        crop = (int(round((resize[0] - h) / 2.0)), int(round((resize[1] - w) / 2.0)), h, w)
    else:
        crop = tuple(int(x) for x in meta.get("crop", (0, 0, *resize)))
    stride = flags.stride or first("stride")
    if stride is None:
        if crop[2] % grid[0] or crop[3] % grid[1] or crop[2] // grid[0] != crop[3] // grid[1]:
            raise DataError(path, f"meta gives no patch size and the {crop[2]}x{crop[3]} crop is not a whole number "
                                  f"of square cells of the {grid[0]}x{grid[1]} grid: pass --stride (and --resize / "
                                  "--crop if the encoder resized or cropped the frames)")
        stride = crop[2] // grid[0]
    try:
        transform = GridTransform(size, resize, crop, int(stride))
    except ConfigError as e:
        raise DataError(path, f"meta and flags give an impossible transform: {e.problem}") from None
    if transform.grid != tuple(grid):
        raise DataError(path, f"the transform (resize {list(resize)}, crop {list(crop)}, stride {stride}) gives a "
                              f"{transform.grid} grid, the features hold {tuple(grid)}")
    return transform


def convert_pack(pt_path: Path, out: Path, encoder: str, steps: dict[str, str], frame_order: list[str],
                 image_size: tuple[int, int], flags: argparse.Namespace) -> dict:
    """One note .pt pack -> a zarr pack of unique frames in episode order."""
    content = load_pt(pt_path)
    for key in ("per_frame_features", "frame_paths"):
        if key not in content:
            raise DataError(pt_path, f"no {key!r} (keys: {sorted(content)})")
    features, frame_paths, meta = content["per_frame_features"], content["frame_paths"], dict(content.get("meta") or {})
    if not isinstance(features, torch.Tensor) or features.ndim != 5:
        raise DataError(pt_path, f"per_frame_features must be a [W, T, Hf, Wf, C] tensor, got "
                                 f"{getattr(features, 'shape', type(features).__name__)}")
    W, T, Hf, Wf, C = features.shape
    if len(frame_paths) != W or any(len(paths) != T for paths in frame_paths):
        raise DataError(pt_path, f"frame_paths must be {W} lists of {T} paths")
    if not torch.isfinite(features).all():
        raise DataError(pt_path, "per_frame_features hold NaN or infinite values")
    position = {step: i for i, step in enumerate(frame_order)}
    per_frame: dict[int, torch.Tensor] = {}
    for w, paths in enumerate(frame_paths):
        for t, p in enumerate(paths):
            stem = Path(str(p)).stem
            if stem not in steps:
                raise DataError(pt_path, f"frame path {p!r} names no frame of the episode")
            f = position[steps[stem]]
            if f in per_frame:
                if not torch.allclose(per_frame[f].float(), features[w, t].float(), atol=1e-2, rtol=1e-2):
                    raise DataError(pt_path, f"frame {p!r} has different features in two windows")
            else:
                per_frame[f] = features[w, t]
    missing = [frame_order[f] for f in range(len(frame_order)) if f not in per_frame]
    if missing:
        raise DataError(pt_path, f"{len(missing)} frame(s) of the episode are in no window (e.g. {missing[0]})")
    transform = grid_transform(meta, image_size, (Hf, Wf), flags, pt_path)
    stride = flags.window_stride or _window_stride(frame_paths, steps, position)
    relative = [f"{out.parent.name}/{out.stem}/{s}.png" for s in frame_order]
    with PackWriter(out, relative, transform, C, encoder, window=T, window_stride=stride,
                    extra={"kind": "converted", "source": str(pt_path), "meta": _plain(meta)}) as pack:
        for f in range(len(frame_order)):
            pack.write(f, per_frame[f][None].float().numpy())
    return {"frames": len(frame_order), "windows": len(window_index(len(frame_order), T, stride)), "grid": [Hf, Wf],
            "channels": C, "transform": transform.to_dict()}


def _window_stride(frame_paths, steps: dict[str, str], position: dict[str, int]) -> int:
    starts = [position[steps[Path(str(paths[0])).stem]] for paths in frame_paths]
    gaps = np.diff(sorted(starts))
    return int(gaps[gaps > 0].min()) if (gaps > 0).any() else 1


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def convert_points(pt_path: Path, out_dir: Path, step: str, image_size: tuple[int, int], offset: np.ndarray) -> int:
    content = load_pt(pt_path)
    if "uv" not in content:
        raise DataError(pt_path, f"point file without uv (keys: {sorted(content)}); point-to-patch alignment needs "
                                 "each point's pixel")
    pc = np.asarray(content.get("pc"), dtype=np.float64) if "pc" in content else None
    if pc is None or pc.ndim != 2 or pc.shape[1] < 6:
        raise DataError(pt_path, f"pc must be [N, 6] xyz + rgb, got {None if pc is None else list(pc.shape)}")
    uv = np.asarray(content["uv"], dtype=np.float64) + offset
    if uv.shape != (len(pc), 2):
        raise DataError(pt_path, f"uv has shape {list(uv.shape)} for {len(pc)} points")
    H, W = image_size
    outside = ~((uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5))
    if outside.any():
        raise DataError(pt_path, f"{int(outside.sum())} uv outside the {W}x{H} image (e.g. {uv[outside][0].tolist()}); "
                                 "pass --uv-offset if its pixel centres are not at integers")
    rgb = pc[:, 3:6] * (255.0 if pc[:, 3:6].max() <= 1.0 else 1.0)
    write_ply(out_dir / f"{step}.ply", pc[:, :3], np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    arrays = {"uv": uv.astype(np.float32)}
    if "pc_feat" in content:
        arrays["pc_feat"] = np.asarray(content["pc_feat"], dtype=np.float32)
    from sensorium.engine.checkpoint import atomic_save_npz

    atomic_save_npz(out_dir / f"{step}.npz", **arrays)
    return len(pc)


def prepare(note_root: str | Path, out: str | Path, flags: argparse.Namespace) -> dict:
    from PIL import Image

    note_root, out = Path(note_root), Path(out)
    rgb_root = note_root / "rgb_dataset" / "RGB"
    if not rgb_root.is_dir():
        raise DataError(rgb_root, "no frames directory (the note's rgb_dataset/RGB/<task>/<episode>/)")
    encoders = dict(e.split("=", 1) for e in flags.encoder) if flags.encoder else {
        p.name.removeprefix("features_"): p.name for p in sorted((note_root / "rgb_dataset").glob("features_*"))}
    if not encoders:
        raise DataError(note_root / "rgb_dataset", "no features_* directories (or pass --encoder NAME=DIR)")
    pc_root = note_root / "pc_dataset" / "PC" / "ULIP_FEAT_PT_POINT"
    summary = {"episodes": 0, "frames": 0, "points": 0, "packs": {}, "encoders": encoders}
    for task_dir in sorted(p for p in rgb_root.iterdir() if p.is_dir()):
        for episode_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            task, name = task_dir.name, episode_dir.name
            files = sorted(p for p in episode_dir.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not files:
                raise DataError(episode_dir, "no frames (*.png, *.jpg)")
            steps = step_names(files)
            order = sorted(steps.values())
            frame_dir = out / "rgb" / task / name
            frame_dir.mkdir(parents=True, exist_ok=True)
            sizes = set()
            for f in files:
                with Image.open(f) as image:
                    sizes.add((image.height, image.width))
                    target = frame_dir / f"{steps[f.stem]}.png"
                    if f.suffix.lower() == ".png":
                        shutil.copyfile(f, target)
                    else:
                        image.convert("RGB").save(target)
            if len(sizes) != 1:
                raise DataError(episode_dir, f"frames of different sizes {sorted(sizes)}")
            image_size = sizes.pop()
            packs = {}
            for encoder, directory in encoders.items():
                pt = note_root / "rgb_dataset" / directory / task / f"{name}.pt"
                if not pt.is_file():
                    raise DataError(pt, f"episode {task}/{name} lacks the {encoder!r} feature pack")
                packs[encoder] = convert_pack(pt, out / "features" / encoder / task / f"{name}.zarr", encoder, steps,
                                              order, image_size, flags)
            camera = _camera(packs, flags, note_root, image_size, encoders, task, name)
            (frame_dir / CAMERA_FILE).write_text(json.dumps(camera) + "\n")
            point_dir = out / "pc" / task / name
            point_dir.mkdir(parents=True, exist_ok=True)
            found = {}
            for p in sorted((pc_root / task / name).glob("*.ply.ulip_*.pt")):
                stem = POINT_FILE.match(p.name).group("step")
                if stem in steps:
                    found[steps[stem]] = p
            missing = [s for s in order if s not in found]
            if missing:
                raise DataError(pc_root / task / name, f"no point file for {len(missing)} frame(s), e.g. {missing[0]}")
            for step, p in found.items():
                summary["points"] += convert_points(p, point_dir, step, image_size, np.asarray(flags.uv_offset))
            if flags.actions:
                csv_path = Path(flags.actions) / task / f"{name}.csv"
                read_actions(csv_path, order)  # checked before it is copied
                (out / "actions" / task).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(csv_path, out / "actions" / task / f"{name}.csv")
            summary["episodes"] += 1
            summary["frames"] += len(order)
            summary["packs"][f"{task}/{name}"] = packs
    atomic_write_json(out / "prepare.json", summary)
    return summary


def _camera(packs: dict, flags, note_root: Path, image_size: tuple[int, int], encoders: dict, task: str,
            name: str) -> dict:
    if flags.intrinsics:
        fx, fy, cx, cy = flags.intrinsics
    else:
        metas = [packs[e]["transform"] for e in packs]
        source = note_root / "rgb_dataset" / encoders[next(iter(encoders))] / task / f"{name}.pt"
        intrinsics = dict(load_pt(source).get("meta") or {}).get("intrinsics")
        if not intrinsics:
            raise DataError(source, "meta has no intrinsics {fx, fy, cx, cy}: pass --intrinsics FX FY CX CY "
                                    f"(frames {image_size[1]}x{image_size[0]}; packs {len(metas)})")
        fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy"))
    return {"image_size": list(image_size), "intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium prepare rgbpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="NOTE_ROOT (rgb_dataset/, pc_dataset/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", action="append", default=[],
                        help="NAME=FEATURE_DIR (a directory under rgb_dataset/); default: every features_* as its suffix")
    parser.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"))
    parser.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "H", "W"))
    group.add_argument("--center-crop", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--uv-offset", type=float, nargs=2, default=(0.0, 0.0), metavar=("DU", "DV"))
    parser.add_argument("--actions", type=Path, default=None, help="directory of <task>/<episode>.csv")
    parser.add_argument("--window-stride", type=int, default=None, help="default: the .pt packs' own")
    args = parser.parse_args(argv)
    summary = prepare(args.input, args.out, args)
    print(f"[prepare] rgbpc: {summary['episodes']} episodes, {summary['frames']} frames, {summary['points']} points, "
          f"encoders {', '.join(summary['encoders'])} -> {args.out}")
    return 0
