import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sensorium.recipes.tactile import synth


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("tacquad")
    settings = synth.generate(out, seed=3, items_indoor=6, items_outdoor=2, frames=6, size=32)
    return out, settings


def _frames(folder, frames):
    return np.stack([np.asarray(Image.open(folder / f"{t}.png"), dtype=np.float64) / 255
                     for t in range(frames)])


def test_writes_the_tacquad_layout(small):
    out, settings = small
    for scene, n in (("indoor", 6), ("outdoor", 2)):
        rows = list(csv.reader(open(out / f"contact_{scene}.csv")))
        assert len(rows) == n and all(len(r) == 7 for r in rows)
        assert rows[0][1].isdigit()  # no header: AnyTouch parses every row as data
        for item, *bounds in rows:
            bounds = list(map(int, bounds))
            for k, sensor in enumerate(synth.SENSORS):
                start, end = bounds[2 * k], bounds[2 * k + 1]
                assert 0 < start and end == 5 and end - start + 1 >= 4
                folder = out / f"data_{scene}" / item / sensor
                assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.png" for t in range(6))
                image = Image.open(folder / "0.png")
                assert image.mode == "RGB"
                assert (image.height, image.width) == tuple(settings["frame_sizes"][sensor])
    assert json.loads((out / "synth.json").read_text())["classes"] == list(synth.INDENTERS)


def test_sensors_differ_in_resolution_and_colour(small):
    out, settings = small
    assert len({tuple(s) for s in settings["frame_sizes"].values()}) == 3
    means = [_frames(out / "data_indoor" / "indoor_000" / s, 6).mean(axis=(0, 1, 2)) for s in synth.SENSORS]
    assert min(np.abs(a - b).sum() for i, a in enumerate(means) for b in means[i + 1:]) > 0.03


def test_labels_are_balanced_and_match_the_generic_index(small):
    out, _ = small
    labels = {(r["scene"], r["item"]): int(r["label"]) for r in csv.DictReader(open(out / "labels.csv"))}
    assert Counter(labels.values()).most_common(1)[0][1] <= 2  # 6 indoor items over 6 classes, 2 outdoor
    rows = list(csv.DictReader(open(out / "index.csv")))
    contact = [list(map(int, r[1:])) for scene in ("indoor", "outdoor")
               for r in csv.reader(open(out / f"contact_{scene}.csv"))]
    # one generic row per window t-3..t inside each contact range
    assert len(rows) == sum(b[2 * k + 1] - b[2 * k] - 2 for b in contact for k in range(3))
    for row in rows:
        scene_dir, item = row["frame_0"].split("/")[:2]
        assert int(row["label"]) == labels[(scene_dir.removeprefix("data_"), item)]
        ts = [int(row[f"frame_{k}"].rsplit("/", 1)[1].removesuffix(".png")) for k in range(4)]
        assert ts == list(range(ts[0], ts[0] + 4))


def test_frame_t_differs_from_frame_t_minus_1_by_more_than_noise(small):
    """For every window t-3..t, copying frame t-1 misses real motion: the squared change exceeds
    what sensor noise alone gives (2 sigma^2) by a margin, and stays local (no cuts)."""
    out, _ = small
    rows = {(scene, r[0]): list(map(int, r[1:])) for scene in ("indoor", "outdoor")
            for r in csv.reader(open(out / f"contact_{scene}.csv"))}
    energies = []
    for (scene, item), bounds in rows.items():
        for k, sensor in enumerate(synth.SENSORS):
            sigma = synth.STYLES[sensor].noise * (1.3 if scene == "outdoor" else 1.0)
            f = _frames(out / f"data_{scene}" / item / sensor, 6)
            for t in range(bounds[2 * k] + 3, bounds[2 * k + 1] + 1):
                change = f[t] - f[t - 1]
                energies.append((change**2).mean() / (2 * sigma**2))
                assert (np.abs(change) > 5 * sigma).mean() < 0.5, (scene, item, sensor, t)
    assert min(energies) > 1.3 and np.median(energies) > 2.0, (min(energies), np.median(energies))


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 1), (b, 1), (c, 2)):
        synth.generate(out, seed=seed, items_indoor=2, items_outdoor=1, frames=4, size=16)
    for rel in ("contact_indoor.csv", "index.csv", "labels.csv", "data_indoor/indoor_001/digit/3.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    frame = "data_indoor/indoor_001/digit/3.png"
    assert (a / frame).read_bytes() != (c / frame).read_bytes()


def test_main_cli(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--seed", "0", "--items-indoor", "1", "--items-outdoor", "1",
                       "--frames", "4", "--size", "16"]) == 0
    assert "windows" in capsys.readouterr().out
    assert (tmp_path / "data_outdoor" / "outdoor_000" / "duragel" / "3.png").is_file()
    with pytest.raises(ValueError, match="4 frames"):
        synth.generate(tmp_path, frames=3)
