"""`sensorium prepare doppler --input DIR --out DIR --val-ratio 0.2 --test-ratio 0.2 --seed S`: check a
dataset in the `ID_k` layout and split it per user into train, val and test.

Writes OUT/split.csv (`path,user,recording,split`, paths relative to the input folder; see
`sensorium.recipes.doppler.reader`) and OUT/prepare.json (the input folder, image size and mode,
users, counts per split, skipped files, where the split came from, and a fingerprint of the
dataset's content that later stages check). Both are written atomically.

The split is made per user (stratified), by recording: each user's recordings are shuffled (seeded
by the seed and the user); the first `round(val_ratio * n)` go to val, the next
`round(test_ratio * n)` to test, the rest to train. Val and test each get at least one recording
when the ratio is > 0 and the user has three or more; train always keeps one; a user with two
recordings gives its second to test (test reports; a user without val only weakens the choices made
on val). Val comes first in the shuffle, so adding a test split (or changing its ratio) leaves val
as it was and takes test from train's share. Val chooses (the VAE's best checkpoint, the CFG scale);
test reports (`sensorium eval doppler`); nothing chooses on test.

**A split the data already has**: when the input folder holds `split.csv` (or `--split-file FILE`
names one) with at least the columns `path` (relative to the input folder, as `ID_3/rec_001.png`)
and `split` (train, val or test), that split is used and the ratios are not: every image must be
listed, and the files of one recording (and files of identical content) must share a split.

Files of one recording, and files with identical content, always share a split; identical content
under two users is an error.
"""

from __future__ import annotations

import argparse
import csv
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
    SPLITS,
    Recording,
    check_consistent,
    scan,
    split_csv_text,
)


def split_users(recordings: list[Recording], val_ratio: float, test_ratio: float, seed: int) -> list[str]:
    """"train", "val" or "test" for each recording, by the rule of the module docstring."""
    for name, ratio in (("--val-ratio", val_ratio), ("--test-ratio", test_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(name, f"must be in [0, 1), got {ratio}")
    if val_ratio + test_ratio >= 1.0:
        raise ConfigError("--val-ratio/--test-ratio", f"together must leave train a share: {val_ratio} + "
                                                      f"{test_ratio} >= 1")
    by_user: dict[int, list[str]] = defaultdict(list)
    for rec in recordings:
        if rec.recording not in by_user[rec.user]:
            by_user[rec.user].append(rec.recording)
    held_out: dict[tuple[int, str], str] = {}
    for user, ids in by_user.items():
        order = [str(r) for r in np.random.default_rng([seed, user]).permutation(sorted(ids))]
        n = len(order)
        n_val, n_test = round(val_ratio * n), round(test_ratio * n)
        if n >= 2:
            n_val = max(n_val, 1) if val_ratio > 0 else 0
            n_test = max(n_test, 1) if test_ratio > 0 else 0
        n_test = min(n_test, max(n - 1, 0))  # train keeps one; test before val
        n_val = min(n_val, max(n - 1 - n_test, 0))
        held_out |= {(user, r): "val" for r in order[:n_val]}
        held_out |= {(user, r): "test" for r in order[n_val:n_val + n_test]}
    return [held_out.get((rec.user, rec.recording), "train") for rec in recordings]


def read_split_file(path: Path, root: Path, recordings: list[Recording],
                    skipped: list[DataError]) -> list[str]:
    """The split of each recording as a user's `path,split` CSV gives it (see the module docstring)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "split"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(path, f"a split file needs the columns path and split; missing {sorted(missing)} "
                                  f"(found {reader.fieldnames})")
        listed: dict[str, str] = {}
        for n, row in enumerate(reader, start=2):
            name, split = (row["path"] or "").strip(), (row["split"] or "").strip()
            if split not in SPLITS:
                raise DataError(path, f"row {n}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            if listed.setdefault(name, split) != split:
                raise DataError(path, f"row {n}: {name} is listed as both {listed[name]} and {split}")
    found = {rec.path.relative_to(root).as_posix() for rec in recordings}
    left_out = {Path(e.path).resolve().relative_to(root).as_posix() for e in skipped
                if e.path and Path(e.path).resolve().is_relative_to(root)}  # bad files skipped by scan
    unknown = sorted(set(listed) - found - left_out)
    if unknown:
        raise DataError(path, f"lists {len(unknown)} file(s) that are not images of the dataset, first "
                              f"{unknown[0]!r} (paths are relative to {root})")
    unlisted = sorted(found - set(listed))
    if unlisted:
        raise DataError(root / unlisted[0], f"not listed in {path} ({len(unlisted)} image(s) are not): "
                                            "every image needs a split")
    splits = [listed[rec.path.relative_to(root).as_posix()] for rec in recordings]
    first: dict[tuple[int, str], tuple[str, Path]] = {}
    for rec, split in zip(recordings, splits):
        other_split, other = first.setdefault((rec.user, rec.recording), (split, rec.path))
        if other_split != split:
            raise DataError(path, f"{rec.path.relative_to(root)} ({split}) and {other.relative_to(root)} "
                                  f"({other_split}) are one recording (same recording id or identical "
                                  "content) in two splits")
    return splits


def prepare(input_dir: str | Path, out_dir: str | Path, val_ratio: float = 0.2, seed: int = 0,
            on_bad_sample: OnBadSample = "error", recording_pattern: str = RECORDING_PATTERN,
            test_ratio: float = 0.2, split_file: str | Path | None = None) -> dict:
    """Check, split and record a dataset; returns prepare.json's content. `split_file`: a user's
    `path,split` CSV (default: INPUT/split.csv when it exists); with one, the ratios are unused."""
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
    split_file = Path(split_file) if split_file is not None else root / "split.csv"
    if split_file.is_file():
        splits = read_split_file(split_file, root, recordings, skipped)
        source = str(split_file.resolve())
    elif split_file != root / "split.csv":
        raise DataError(split_file, "no such split file")
    else:
        splits = split_users(recordings, val_ratio, test_ratio, seed)
        source = "ratios"

    fingerprint = hashlib.blake2b(digest_size=16)
    for rec, digest in merged:
        fingerprint.update(f"{rec.path.relative_to(root).as_posix()}:{rec.user}:{digest}\n".encode())
    users = sorted({rec.user for rec in recordings})
    pairs = list(zip(recordings, splits))
    counts = {split: {str(u): sum(1 for r, s in pairs if r.user == u and s == split) for u in users}
              for split in SPLITS}
    info = {
        "input": str(root),
        "image_size": list(size),
        "mode": mode,
        "users": users,
        "split_source": source,
        "val_ratio": val_ratio if source == "ratios" else None,
        "test_ratio": test_ratio if source == "ratios" else None,
        "seed": seed,
        "images": len(recordings),
        "recordings": len({(r.user, r.recording) for r in recordings}),
        "splits": {split: sum(c.values()) for split, c in counts.items()},
        "per_user": counts,
        "skipped": [str(e) for e in skipped],
        "fingerprint": fingerprint.hexdigest(),
    }
    for split, ratio in (("val", val_ratio), ("test", test_ratio)):
        lacking = [u for u in users if counts[split][str(u)] == 0]
        if lacking and (ratio > 0 or source != "ratios"):
            info[f"users_without_{split}"] = lacking
    atomic_write_text(out / "split.csv", split_csv_text(root, recordings, splits))
    atomic_write_json(out / "prepare.json", info)
    return info


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium prepare doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="the dataset: DIR/ID_k/*.png")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-ratio", type=float, default=0.2,
                        help="share of each user's recordings in val (chooses checkpoints and settings)")
    parser.add_argument("--test-ratio", type=float, default=0.2,
                        help="share of each user's recordings in test (reports), taken from train's share")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="a path,split CSV that splits the data already (default: INPUT/split.csv "
                             "when present); the ratios are then unused")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="skip: log and count bad files and empty folders instead of failing")
    parser.add_argument("--recording-pattern", default=RECORDING_PATTERN,
                        help="regex with a (?P<recording>...) group applied to file stems "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    info = prepare(args.input, args.out, args.val_ratio, args.seed, args.on_bad_sample,
                   args.recording_pattern, args.test_ratio, args.split_file)
    height, width = info["image_size"]
    splits = info["splits"]
    source = "" if info["split_source"] == "ratios" else f" (read from {info['split_source']})"
    print(f"[prepare] {info['images']} images ({info['mode']} {height}x{width}) of {len(info['users'])} "
          f"users: train {splits['train']}, val {splits['val']}, test {splits['test']}{source}; "
          f"{len(info['skipped'])} skipped -> {args.out / 'split.csv'}")
    for problem in info["skipped"]:
        print(f"[prepare] skipped: {problem}")
    for split in ("val", "test"):
        if info.get(f"users_without_{split}"):
            print(f"[prepare] warning: users without {split} data (too few recordings): "
                  f"{info[f'users_without_{split}']}")
    return 0
