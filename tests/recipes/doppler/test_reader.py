"""The ID_k layout and `sensorium prepare doppler`: every bad-input case of the issue ends in one
error naming the file (or a logged, counted skip), and the split is per user with no recording on
both sides."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sensorium.cli import main
from sensorium.errors import DataError
from sensorium.recipes.doppler.prepare import prepare
from sensorium.recipes.doppler.reader import load_image, scan


def _png(path, size=(32, 24), mode="L", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1]) if mode in ("L", "I;16") else (size[0], size[1], 3)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    Image.fromarray(rng.integers(0, 255 if dtype == np.uint8 else 60000, shape).astype(dtype)).save(path)
    return path


def _dataset(root, users=3, per_user=5, **kwargs):
    for u in range(1, users + 1):
        for r in range(per_user):
            _png(root / f"ID_{u}" / f"rec_{r:03d}.png", seed=100 * u + r, **kwargs)
    return root


def _one_error_line(capsys, argv):
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sensorium: error:")]
    assert len(lines) == 1
    return lines[0]


def test_a_split_per_user_with_no_recording_in_both_splits(tmp_path):
    root = _dataset(tmp_path / "data", users=3, per_user=10)
    for seg in range(3):  # one walk cut into three slices: one recording
        _png(root / "ID_2" / f"walk_seg{seg}.png", seed=900 + seg)
    # Same content: the same recording, whatever the name.
    shutil.copy(root / "ID_1" / "rec_000.png", root / "ID_1" / "copy_of_rec_000.png")
    info = prepare(root, tmp_path / "prep", val_ratio=0.2, seed=3)
    rows = list(csv.DictReader(open(tmp_path / "prep" / "split.csv")))
    assert info["users"] == [1, 2, 3] and info["images"] == len(rows) == 34
    split_of = {}
    for row in rows:
        split_of.setdefault((row["user"], row["recording"]), set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())  # no recording on both sides
    assert sum(1 for r in rows if r["user"] == "2" and r["recording"] == "walk") == 3
    recording_of = {r["path"]: r["recording"] for r in rows}
    assert recording_of["ID_1/copy_of_rec_000.png"] == recording_of["ID_1/rec_000.png"]
    for user in ("1", "2", "3"):  # 20% of each user's recordings (10 or 11 of them) in val, 20% in test
        assert sum(1 for (u, _), s in split_of.items() if u == user and s == {"val"}) == 2
        assert sum(1 for (u, _), s in split_of.items() if u == user and s == {"test"}) == 2
    again = prepare(root, tmp_path / "prep2", val_ratio=0.2, seed=3)
    assert (tmp_path / "prep2" / "split.csv").read_text() == (tmp_path / "prep" / "split.csv").read_text()
    assert again["fingerprint"] == info["fingerprint"]


def test_non_image_files_in_a_user_folder(tmp_path, capsys):
    root = _dataset(tmp_path / "data")
    (root / "ID_2" / "notes.txt").write_text("recorded on a Tuesday")
    (root / "ID_2" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p")])
    assert f"{root / 'ID_2' / 'notes.txt'}: not an image file in user folder ID_2" in line
    assert main(["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p"),
                 "--on-bad-sample", "skip"]) == 0
    info = json.loads((tmp_path / "p" / "prepare.json").read_text())
    assert len(info["skipped"]) == 1 and "notes.txt" in info["skipped"][0] and info["images"] == 15
    assert "skipped:" in capsys.readouterr().out


def test_an_empty_user_folder(tmp_path, capsys):
    root = _dataset(tmp_path / "data")
    (root / "ID_7").mkdir()
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p")])
    assert f"{root / 'ID_7'}: empty user folder" in line
    skipped = []
    assert {r.user for r in scan(root, "skip", skipped)} == {1, 2, 3} and len(skipped) == 1


def test_inconsistent_sizes(tmp_path, capsys):
    root = _dataset(tmp_path / "data")
    _png(root / "ID_3" / "rec_999.png", size=(40, 24))
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p")])
    assert f"{root / 'ID_3' / 'rec_999.png'}: image is L 40x24 (HxW)" in line
    assert "share one size and mode" in line


def test_inconsistent_modes(tmp_path, capsys):
    root = _dataset(tmp_path / "data")
    _png(root / "ID_1" / "rec_999.png", mode="RGB")
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p")])
    assert f"{root / 'ID_1' / 'rec_999.png'}: image is RGB 32x24" in line


def test_an_undecodable_image_and_a_folder_without_users(tmp_path, capsys):
    root = _dataset(tmp_path / "data")
    (root / "ID_1" / "rec_000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(root), "--out", str(tmp_path / "p")])
    assert f"{root / 'ID_1' / 'rec_000.png'}: cannot decode image" in line
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png")
    line = _one_error_line(capsys, ["prepare", "doppler", "--input", str(tmp_path / "flat"),
                                    "--out", str(tmp_path / "q")])
    assert "no user folders: expected ID_1, ID_2" in line


def test_the_same_file_under_two_users_is_an_error(tmp_path):
    root = _dataset(tmp_path / "data")
    shutil.copy(root / "ID_1" / "rec_000.png", root / "ID_3" / "rec_100.png")
    with pytest.raises(DataError, match="one recording cannot belong to two users"):
        prepare(root, tmp_path / "p")


@pytest.mark.parametrize("mode, channels", [("RGB", 1), ("L", 3), ("I;16", 1)])
def test_any_mode_converts_to_the_models_channels_and_size(tmp_path, mode, channels):
    path = _png(tmp_path / "x.png", size=(48, 40), mode=mode)
    x = load_image(path, (16, 16), channels)
    assert x.shape == (channels, 16, 16) and x.dtype.is_floating_point is False
    assert int(x.max()) > 100  # 16-bit images are scaled to their range, not clipped
