"""`sensorium prepare doppler --input DIR --out DIR --val-ratio 0.2 --seed S`: check a dataset in the
`ID_k` layout and split it per user.

Writes OUT/split.csv (`path,user,recording,split`, paths relative to the input folder; see
`sensorium.recipes.doppler.reader`) and OUT/prepare.json (the input folder, image size and mode,
users, counts per split, skipped files, and a fingerprint of the dataset's content that later stages
check). The split is stratified by user: each user's recordings are shuffled (seeded by the seed
and the user) and `round(val_ratio * n)` of them, at least one and never all, go to val. Files of
one recording, and files with identical content, always share a split; identical content under two
users is an error.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from sensorium.data.bad_samples import OnBadSample
from sensorium.engine.checkpoint import atomic_write_json, atomic_write_text
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.doppler.latents import file_digest
from sensorium.recipes.doppler.reader import (
    RECORDING_PATTERN,
    Recording,
    check_consistent,
    scan,
    split_csv_text,
)


def split_users(recordings: list[Recording], val_ratio: float, seed: int) -> list[str]:
    """"train" or "val" for each recording: per user, a seeded shuffle of its recording ids, the first
    round(val_ratio * n) (at least 1 and at most n - 1 when n >= 2) to val."""
    if not 0.0 <= val_ratio < 1.0:
        raise ConfigError("--val-ratio", f"must be in [0, 1), got {val_ratio}")
    by_user: dict[int, list[str]] = defaultdict(list)
    for rec in recordings:
        if rec.recording not in by_user[rec.user]:
            by_user[rec.user].append(rec.recording)
    val: set[tuple[int, str]] = set()
    for user, ids in by_user.items():
        order = np.random.default_rng([seed, user]).permutation(sorted(ids))
        n = int(round(val_ratio * len(order)))
        if val_ratio > 0 and len(order) >= 2:
            n = min(max(n, 1), len(order) - 1)
        val |= {(user, str(r)) for r in order[:n]}
    return ["val" if (rec.user, rec.recording) in val else "train" for rec in recordings]


def prepare(input_dir: str | Path, out_dir: str | Path, val_ratio: float = 0.2, seed: int = 0,
            on_bad_sample: OnBadSample = "error", recording_pattern: str = RECORDING_PATTERN) -> dict:
    """Check, split and record a dataset; returns prepare.json's content."""
    root, out = Path(input_dir).resolve(), Path(out_dir)
    skipped: list[DataError] = []
    recordings = scan(root, on_bad_sample, skipped, recording_pattern)
    recordings, mode, size = check_consistent(recordings, on_bad_sample, skipped)

    # Identical files are one recording (a copy must not sit on both sides of the split).
    first_of: dict[str, Recording] = {}
    merged = []
    for rec in recordings:
        digest = file_digest(rec.path)
        original = first_of.setdefault(digest, rec)
        if original.user != rec.user:
            raise DataError(rec.path, f"same content as {original.path} of user {original.user}: one "
                                      "recording cannot belong to two users")
        merged.append((Recording(rec.path, rec.user, original.recording), digest))
    recordings = [rec for rec, _ in merged]
    splits = split_users(recordings, val_ratio, seed)

    fingerprint = hashlib.blake2b(digest_size=16)
    for rec, digest in merged:
        fingerprint.update(f"{rec.path.relative_to(root).as_posix()}:{rec.user}:{digest}\n".encode())
    users = sorted({rec.user for rec in recordings})
    pairs = list(zip(recordings, splits))
    counts = {split: {str(u): sum(1 for r, s in pairs if r.user == u and s == split) for u in users}
              for split in ("train", "val")}
    info = {
        "input": str(root),
        "image_size": list(size),
        "mode": mode,
        "users": users,
        "val_ratio": val_ratio,
        "seed": seed,
        "images": len(recordings),
        "recordings": len({(r.user, r.recording) for r in recordings}),
        "splits": {split: sum(c.values()) for split, c in counts.items()},
        "per_user": counts,
        "skipped": [str(e) for e in skipped],
        "fingerprint": fingerprint.hexdigest(),
    }
    no_val = [u for u in users if counts["val"][str(u)] == 0]
    if no_val and val_ratio > 0:
        info["users_without_val"] = no_val
    atomic_write_text(out / "split.csv", split_csv_text(root, recordings, splits))
    atomic_write_json(out / "prepare.json", info)
    return info


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium prepare doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="the dataset: DIR/ID_k/*.png")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-ratio", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="skip: log and count bad files and empty folders instead of failing")
    parser.add_argument("--recording-pattern", default=RECORDING_PATTERN,
                        help="regex with a (?P<recording>...) group applied to file stems "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    info = prepare(args.input, args.out, args.val_ratio, args.seed, args.on_bad_sample,
                   args.recording_pattern)
    height, width = info["image_size"]
    splits = info["splits"]
    print(f"[prepare] {info['images']} images ({info['mode']} {height}x{width}) of {len(info['users'])} "
          f"users: train {splits['train']}, val {splits['val']}; {len(info['skipped'])} skipped -> "
          f"{args.out / 'split.csv'}")
    for problem in info["skipped"]:
        print(f"[prepare] skipped: {problem}")
    if info.get("users_without_val"):
        print(f"[prepare] warning: users with a single recording have no val data: "
              f"{info['users_without_val']}")
    return 0
