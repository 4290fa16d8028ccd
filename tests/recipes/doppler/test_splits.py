"""`sensorium prepare doppler`'s train / val / test split: per user and by recording, val and test
disjoint, val as it was before test existed (test comes out of train's share), the small-user rules,
and a split the user's data already has (INPUT/split.csv or --split-file), read as given or refused
where it would put one recording in two splits."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sensorium.cli import main
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.doppler.prepare import prepare, split_users
from sensorium.recipes.doppler.reader import RealSpectrograms, Recording


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 12)).astype(np.uint8)).save(path)


def _dataset(root, per_user=(10, 10, 10)):
    for u, n in enumerate(per_user, start=1):
        for r in range(n):
            _png(root / f"ID_{u}" / f"rec_{r:03d}.png", seed=100 * u + r)
    return root


def _recordings(per_user):
    return [Recording(Path(f"ID_{u}/r{r}.png"), u, f"r{r}") for u, n in per_user.items() for r in range(n)]


def _rows(prepared):
    with open(prepared / "split.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_val_and_test_are_disjoint_by_recording_and_test_comes_from_train(tmp_path):
    root = _dataset(tmp_path / "data", per_user=(20, 20, 20))
    for seg in range(3):  # one walk cut into three slices: one recording
        _png(root / "ID_2" / f"walk_seg{seg}.png", seed=900 + seg)
    shutil.copy(root / "ID_3" / "rec_000.png", root / "ID_3" / "copy.png")  # identical: one recording
    info = prepare(root, tmp_path / "prep", val_ratio=0.2, test_ratio=0.2, seed=1)
    rows = _rows(tmp_path / "prep")
    split_of: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        split_of.setdefault((row["user"], row["recording"]), set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())  # every recording in one split only
    val = {k for k, s in split_of.items() if s == {"val"}}
    test = {k for k, s in split_of.items() if s == {"test"}}
    assert val and test and not val & test
    per_user = Counter((u, next(iter(s))) for (u, _), s in split_of.items())
    for user in ("1", "2", "3"):  # 20 or 21 recordings: 4 val, 4 test, the rest train
        assert per_user[(user, "val")] == 4 and per_user[(user, "test")] == 4
    assert info["splits"]["test"] == sum(1 for r in rows if r["split"] == "test")
    # Images beyond one per recording: the walk's three slices, the copy.
    extra = {"1": 0, "2": 2 * (("2", "walk") in test), "3": int(("3", "rec_000") in test)}
    assert info["per_user"]["test"] == {u: 4 + extra[u] for u in ("1", "2", "3")}
    # Without a test split, val is the same recordings: test is carved out of train's share.
    prepare(root, tmp_path / "old", val_ratio=0.2, test_ratio=0.0, seed=1)
    old = _rows(tmp_path / "old")
    assert {r["path"] for r in old if r["split"] == "val"} == {r["path"] for r in rows if r["split"] == "val"}
    assert {r["split"] for r in old} == {"train", "val"}
    # The reader serves three disjoint splits.
    real = RealSpectrograms(tmp_path / "prep", image_size=8)
    assert {len(real.paths[s]) for s in ("val", "test")} != {0}
    assert not set(real.paths["val"]) & set(real.paths["test"])
    assert not set(real.paths["train"]) & (set(real.paths["val"]) | set(real.paths["test"]))


def test_the_image_datamodule_validates_on_val_and_tests_on_test(tmp_path):
    from split_checks import assert_val_and_test_held_apart

    from sensorium.recipes.doppler.datamodule import DopplerImageDataModule

    prepare(_dataset(tmp_path / "data"), tmp_path / "prep", val_ratio=0.2, test_ratio=0.2)
    assert_val_and_test_held_apart(DopplerImageDataModule(str(tmp_path / "prep"), image_size=8, eval_batch_size=4))


@pytest.mark.parametrize("n, expected", [(1, {"train": 1}), (2, {"train": 1, "test": 1}),
                                         (3, {"train": 1, "val": 1, "test": 1}),
                                         (10, {"train": 6, "val": 2, "test": 2})])
def test_each_user_keeps_a_training_recording_and_test_goes_before_val(n, expected):
    splits = split_users(_recordings({1: n}), val_ratio=0.2, test_ratio=0.2, seed=0)
    assert dict(Counter(splits)) == expected


def test_ratios_that_leave_train_nothing_are_refused():
    recordings = _recordings({1: 5})
    with pytest.raises(ConfigError, match="--test-ratio: must be in"):
        split_users(recordings, 0.2, 1.0, 0)
    with pytest.raises(ConfigError, match="together must leave train a share"):
        split_users(recordings, 0.5, 0.5, 0)


def _write_split_file(path, assignments):
    lines = ["path,split,note"] + [f"{p},{s},x" for p, s in assignments.items()]
    path.write_text("\n".join(lines) + "\n")


def test_a_split_the_data_already_has_is_read_as_given(tmp_path, capsys):
    root = _dataset(tmp_path / "data", per_user=(4, 4))
    given = {f"ID_{u}/rec_{r:03d}.png": ("train", "train", "val", "test")[r]
             for u in (1, 2) for r in range(4)}
    _write_split_file(root / "split.csv", given)
    info = prepare(root, tmp_path / "prep", val_ratio=0.0, test_ratio=0.0)  # the ratios are unused
    assert {r["path"]: r["split"] for r in _rows(tmp_path / "prep")} == given
    assert info["split_source"] == str((root / "split.csv").resolve()) and info["test_ratio"] is None
    assert info["splits"] == {"train": 4, "val": 2, "test": 2}
    # The same from a file elsewhere, named on the command line.
    (root / "split.csv").rename(tmp_path / "mine.csv")
    assert main(["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p2"),
                 "--split-file", str(tmp_path / "mine.csv")]) == 0
    assert "train 4, val 2, test 2 (read from" in capsys.readouterr().out
    assert {r["path"]: r["split"] for r in _rows(tmp_path / "p2")} == given


def test_a_split_file_that_would_leak_or_is_incomplete_is_an_error(tmp_path):
    root = _dataset(tmp_path / "data", per_user=(3, 3))
    for seg in range(2):
        _png(root / "ID_1" / f"walk_seg{seg}.png", seed=700 + seg)
    given = {f"ID_{u}/rec_{r:03d}.png": "train" for u in (1, 2) for r in range(3)}
    # Two slices of one walk in two splits.
    walk = {"ID_1/walk_seg0.png": "val", "ID_1/walk_seg1.png": "test"}
    _write_split_file(root / "split.csv", {**given, **walk})
    with pytest.raises(DataError, match=r"ID_1/walk_seg1.png \(test\) and ID_1/walk_seg0.png \(val\) are one "
                                        "recording"):
        prepare(root, tmp_path / "p")
    # An image the file does not list.
    _write_split_file(root / "split.csv", {**given, "ID_1/walk_seg0.png": "val"})
    with pytest.raises(DataError, match="walk_seg1.png: not listed in"):
        prepare(root, tmp_path / "p")
    # A listed file that is not an image of the dataset, and a split that does not exist.
    _write_split_file(root / "split.csv", {**given, "ID_1/walk_seg0.png": "val", "ID_1/walk_seg1.png": "val",
                                           "ID_9/gone.png": "test"})
    with pytest.raises(DataError, match="lists 1 file.*'ID_9/gone.png'"):
        prepare(root, tmp_path / "p")
    _write_split_file(root / "split.csv", {**given, "ID_1/walk_seg0.png": "dev", "ID_1/walk_seg1.png": "dev"})
    with pytest.raises(DataError, match="split must be one of train, val, test, got 'dev'"):
        prepare(root, tmp_path / "p")
    (root / "split.csv").write_text("file,fold\n")
    with pytest.raises(DataError, match="needs the columns path and split"):
        prepare(root, tmp_path / "p")
    with pytest.raises(DataError, match="no such split file"):
        prepare(root, tmp_path / "p", split_file=tmp_path / "absent.csv")
    assert not (tmp_path / "p").exists()  # nothing written
