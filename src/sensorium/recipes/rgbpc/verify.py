"""`sensorium verify rgbpc DIR [--features FEATURES] [--encoders E ...]`: check a dataset and its
feature packs before training; a report (printed, and DIR/verify.json), exit status 1 on any problem.

Per episode:

- the layout: frames, camera.json, the actions CSV (at least one row per step);
- per encoder: a pack exists and opens (format, shapes, dtypes float16/float32, windows index), its
  frame paths are the frames on disk in order (so they agree across encoders) and its transform
  was made for the camera's image size;
- features: no NaN or Inf; adjacent-frame similarity: two adjacent frames with identical features,
  or adjacent frames no more alike than frames half the episode apart (frames shuffled), are
  flagged (the camera moves smoothly, so neighbours are the most alike);
- uv -> patch mapping on sampled points of sampled frames: the point files hold uv of the right
  shape inside the image; the frames have camera.json's size; each point's colour in the PLY
  matches the frame's pixel at its uv (uv index this frame: not a resized copy, not swapped u/v); on
  every encoder's grid the points inside its crop land inside the grid and map back to their uv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sensorium.data.packs import FeaturePack, open_pack
from sensorium.errors import DataError
from sensorium.recipes.rgbpc.reader import (
    Episode,
    find_episodes,
    pack_path,
    read_episode,
    read_ply,
    read_point_sidecar,
)

COLOUR_TOLERANCE = 24.0
"""Largest median |point colour - pixel colour| (0-255) of a frame's sampled points."""
SHUFFLE_MARGIN = 0.02
"""Adjacent frames must be at least this much more alike (mean centred cosine) than distant ones."""


def feature_similarity(pack: FeaturePack, chunk: int = 64) -> dict:
    """NaN/Inf count, identical adjacent frames, and mean centred cosine of adjacent frames vs frames
    half the episode apart, reading the pack chunk by chunk."""
    F = pack.num_frames
    nonfinite, vectors = 0, []
    for start in range(0, F, chunk):
        block = pack.frames(start, min(F, start + chunk)).astype(np.float32)  # (n, Hf, Wf, C)
        finite = np.isfinite(block)
        nonfinite += int((~finite).sum())
        vectors.append(np.where(finite, block, 0.0).reshape(len(block), -1))
    x = np.concatenate(vectors)  # (F, Hf*Wf*C)
    identical = [int(t) for t in np.flatnonzero(np.abs(np.diff(x, axis=0)).max(axis=1) == 0)] if F > 1 else []
    x = x - x.mean(axis=0, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    adjacent = float((x[1:] * x[:-1]).sum(axis=1).mean()) if F > 1 else float("nan")
    half = F // 2
    distant = float((x[half:2 * half] * x[:half]).sum(axis=1).mean()) if half >= 2 else float("nan")
    return {"nonfinite": nonfinite, "identical_after": identical, "adjacent": adjacent, "distant": distant}


def check_points(episode: Episode, frame: int, packs: dict[str, FeaturePack], points: int, rng) -> list[str]:
    """uv -> patch mapping on sampled points of one frame (see the module docstring)."""
    from PIL import Image

    problems = []
    xyz, rgb = read_ply(episode.ply_file(frame))
    uv, _ = read_point_sidecar(episode.sidecar_file(frame), len(xyz), episode.camera.image_size, require_features=False)
    with Image.open(episode.frame_file(frame)) as image:
        pixels = np.asarray(image.convert("RGB"))
    H, W = episode.camera.image_size
    if pixels.shape[:2] != (H, W):
        return [f"{episode.frame_file(frame)}: frame is {pixels.shape[1]}x{pixels.shape[0]}, camera.json says {W}x{H}"]
    chosen = rng.choice(len(uv), size=min(points, len(uv)), replace=False)
    u = np.clip(np.rint(uv[chosen, 0]), 0, W - 1).astype(int)
    v = np.clip(np.rint(uv[chosen, 1]), 0, H - 1).astype(int)
    difference = float(np.median(np.abs(pixels[v, u].astype(float) - rgb[chosen].astype(float)).max(axis=1)))
    if difference > COLOUR_TOLERANCE:
        problems.append(f"{episode.sidecar_file(frame)}: point colours differ from the frame's pixels at their uv "
                        f"(median |difference| {difference:.0f} of 255): uv do not index this frame (coordinates of a "
                        "resized image? u and v swapped?)")
    for encoder, pack in packs.items():
        t = pack.transform
        inside = t.inside(uv[chosen])
        grid = t.to_grid(uv[chosen][inside])
        Hf, Wf = pack.grid
        off = (grid[:, 0] < -0.5) | (grid[:, 0] > Wf - 0.5) | (grid[:, 1] < -0.5) | (grid[:, 1] > Hf - 0.5)
        back = np.abs(t.to_image(grid) - uv[chosen][inside]).max() if len(grid) else 0.0
        if off.any() or back > 1e-3:
            problems.append(f"{pack.path}: uv -> grid mapping inconsistent on {int(off.sum())} of {len(grid)} points "
                            f"(round trip error {back:.2g} px)")
        if inside.mean() < 0.5:
            problems.append(f"{pack.path}: only {inside.mean():.0%} of the points lie inside the encoder's crop "
                            f"{list(t.crop)} of the resized {list(t.resize)} image")
    return problems


def verify(root: str | Path, features: str | Path | None = None, encoders: list[str] | None = None,
           sample_frames: int = 2, sample_points: int = 64, seed: int = 0) -> dict:
    root = Path(root)
    features = Path(features) if features else root / "features"
    if encoders is None:
        encoders = sorted(p.name for p in features.iterdir() if p.is_dir()) if features.is_dir() else []
    problems: list[str] = []
    if not encoders:
        problems.append(f"{features}: no feature packs (run `sensorium extract rgbpc`)")
    rng = np.random.default_rng(seed)
    stats: dict[str, list] = {e: [] for e in encoders}
    try:
        found = find_episodes(root)
    except DataError as e:
        return {"root": str(root), "episodes": 0, "packs": 0, "problems": [str(e)], "ok": False}
    checked_packs = 0
    for task, name in found:
        try:
            episode = read_episode(root, task, name)
        except DataError as e:
            problems.append(str(e))
            continue
        packs: dict[str, FeaturePack] = {}
        for encoder in encoders:
            path = pack_path(features, encoder, task, name)
            if not path.exists():
                problems.append(f"{path}: episode {episode.key} lacks the pack of encoder {encoder!r}")
                continue
            try:
                pack = open_pack(path)
            except DataError as e:
                problems.append(str(e))
                continue
            checked_packs += 1
            if pack.frame_paths != episode.frame_paths:
                reference = "the frames on disk"
                problems.append(f"{path}: frame paths disagree with {reference} (and so with the other encoders' "
                                f"packs): {len(pack.frame_paths)} paths, first difference "
                                f"{_first_difference(pack.frame_paths, episode.frame_paths)}")
            if tuple(pack.transform.image_size) != episode.camera.image_size:
                problems.append(f"{path}: transform made for {list(pack.transform.image_size)} images; camera.json "
                                f"says {list(episode.camera.image_size)}")
            similarity = feature_similarity(pack)
            stats[encoder].append((similarity["adjacent"], similarity["distant"]))
            if similarity["nonfinite"]:
                problems.append(f"{path}: {similarity['nonfinite']} NaN or infinite feature values")
            if similarity["identical_after"]:
                t = similarity["identical_after"][0]
                problems.append(f"{path}: frames {t} and {t + 1} have identical features "
                                f"({len(similarity['identical_after'])} such pairs): a frame written twice?")
            if similarity["adjacent"] <= similarity["distant"] + SHUFFLE_MARGIN:
                problems.append(f"{path}: adjacent frames are no more alike than frames half the episode apart "
                                f"(centred cosine {similarity['adjacent']:.3f} vs {similarity['distant']:.3f}): "
                                "frames shuffled?")
            packs[encoder] = pack
        for frame in sorted(rng.choice(len(episode.steps), size=min(sample_frames, len(episode.steps)), replace=False)):
            try:
                problems += check_points(episode, int(frame), packs, sample_points, rng)
            except DataError as e:
                problems.append(str(e))
    summary = {e: {"adjacent": float(np.nanmean([a for a, _ in s])), "distant": float(np.nanmean([d for _, d in s]))}
               for e, s in stats.items() if s}
    return {"root": str(root), "features": str(features), "encoders": encoders, "episodes": len(found),
            "packs": checked_packs, "similarity": summary, "problems": problems, "ok": not problems}


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"frame {i}: {x!r} vs {y!r}"
    return f"lengths {len(a)} vs {len(b)}"


def main(argv: list[str]) -> int:
    from sensorium.engine.checkpoint import atomic_write_json

    parser = argparse.ArgumentParser(prog="sensorium verify rgbpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--features", type=Path, default=None, help="feature packs root (default ROOT/features)")
    parser.add_argument("--encoders", nargs="+", default=None, help="default: every directory under FEATURES")
    parser.add_argument("--sample-frames", type=int, default=2, help="frames per episode whose points are checked")
    parser.add_argument("--sample-points", type=int, default=64)
    parser.add_argument("--report", type=Path, default=None, help="default ROOT/verify.json")
    args = parser.parse_args(argv)
    report = verify(args.root, args.features, args.encoders, args.sample_frames, args.sample_points)
    path = atomic_write_json(args.report or args.root / "verify.json", report)
    similarity = "; ".join(f"{e}: adjacent {s['adjacent']:.3f} vs distant {s['distant']:.3f}"
                           for e, s in report.get("similarity", {}).items())
    print(f"[verify] rgbpc: {report['episodes']} episodes, {report['packs']} packs, {len(report['problems'])} "
          f"problem(s); frame similarity {similarity or 'n/a'} -> {path}")
    for problem in report["problems"][:50]:
        print(f"  {problem}")
    if len(report["problems"]) > 50:
        print(f"  ... and {len(report['problems']) - 50} more (see {path})")
    return 0 if report["ok"] else 1
