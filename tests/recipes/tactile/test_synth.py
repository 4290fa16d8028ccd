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


def _slides(out) -> dict[tuple[str, str, str], bool]:
    """{(scene, item, sensor): the recording slides} from frame_labels.csv."""
    return {(r["scene"], r["item"], r["sensor"]): r["slip"] == "1" for r in _frame_rows(out) if r["slip"]}


def _frame_rows(out) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "frame_labels.csv").read_text().splitlines()))


def test_frame_t_differs_from_frame_t_minus_1_by_more_than_noise(small):
    """For every window t-3..t of a sliding recording, copying frame t-1 misses real motion: the
    squared change exceeds what sensor noise alone gives (2 sigma^2) by a margin, and stays local
    (no cuts). (A static contact changes only while it is pressed in.)"""
    out, _ = small
    rows = {(scene, r[0]): list(map(int, r[1:])) for scene in ("indoor", "outdoor")
            for r in csv.reader(open(out / f"contact_{scene}.csv"))}
    slides = _slides(out)
    energies = []
    for (scene, item), bounds in rows.items():
        for k, sensor in enumerate(synth.SENSORS):
            if not slides[(scene, item, sensor)]:
                continue
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
    for rel in ("contact_indoor.csv", "index.csv", "labels.csv", "frame_labels.csv",
                "data_indoor/indoor_001/digit/3.png"):
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


# --- frame labels ---------------------------------------------------------------------------------------
def test_frame_labels_csv_round_trip_through_the_reader(small):
    from sensorium.recipes.tactile.reader import FRAME_LABELS, read_frame_labels

    out, settings = small
    assert synth.FRAME_LABELS == FRAME_LABELS
    rows = _frame_rows(out)
    assert tuple(rows[0]) == synth.FRAME_LABEL_COLUMNS
    assert len(rows) == (6 + 2) * len(synth.SENSORS) * 6  # every frame of every recording
    labels = read_frame_labels(out / "frame_labels.csv")
    starts = {(scene, r[0], sensor): int(r[1 + 2 * k]) for scene in ("indoor", "outdoor")
              for r in csv.reader((out / f"contact_{scene}.csv").read_text().splitlines())
              for k, sensor in enumerate(synth.SENSORS)}
    for row in rows:
        label = labels[str(out / row["path"])]
        assert (out / row["path"]).is_file()
        in_contact = int(row["frame"]) >= starts[(row["scene"], row["item"], row["sensor"])]
        # no contact -> force 0, centre and slip empty; in contact -> a positive force and a centre on the pad
        assert (label.force > 0) == in_contact and label.force == pytest.approx(float(row["force_n"]))
        if in_contact:
            height, width = np.array(settings["frame_sizes"][row["sensor"]]) * synth.PAD_MM / settings["size"]
            assert 0 < label.contact_mm[0] < width and 0 < label.contact_mm[1] < height
            assert label.slip in (0, 1)
        else:
            assert np.isnan(label.contact_mm).all() and label.slip == -1 and label.force == 0


def test_static_contacts_stay_put_and_sliding_ones_move(small):
    out, settings = small
    rows = _frame_rows(out)
    slides = _slides(out)
    # an exact share of each scene's recordings is pressed in place
    for scene, items in (("indoor", 6), ("outdoor", 2)):
        static = sum(not v for (s, _, _), v in slides.items() if s == scene)
        assert static == round(settings["static_fraction"] * items * len(synth.SENSORS))
    travel = {True: [], False: []}
    for key, slide in slides.items():
        contact = [r for r in rows if (r["scene"], r["item"], r["sensor"]) == key and r["slip"]]
        centres = np.array([[float(r["contact_x_mm"]), float(r["contact_y_mm"])] for r in contact])
        travel[slide].append(np.linalg.norm(centres[-1] - centres[0]))
        if not slide:  # pressed in place: the force only grows
            assert (np.diff([float(r["force_n"]) for r in contact]) >= -1e-9).all(), key
    # The centre of pressure of a static contact moves only where its imprint grows against the pad's
    # edge; a sliding one moves with the indenter (0.4-0.75 mm a frame here), unless it slides along
    # itself (an edge crossing the pad): slip is not readable from the centre alone.
    assert np.median(travel[False]) < 0.2 and np.median(travel[True]) > 1.0, travel


def test_forces_follow_the_gel_stiffness_and_the_indented_volume():
    # a flat 4 x 4 px imprint 1 px deep at size 64 (0.25 mm / px): 16 x 0.25^3 mm^3 x stiffness
    height = np.zeros((2, 12, 16))
    height[1, 2:6, 4:8] = 1.0
    for sensor in synth.SENSORS:
        labels = synth.contact_labels(height, sensor, 64, slides=True)
        assert labels.force_n.tolist() == pytest.approx([0.0, 16 * 0.25**3 * synth.STYLES[sensor].stiffness])
        assert np.isnan(labels.centre_mm[0]).all()
        assert labels.centre_mm[1].tolist() == pytest.approx([6.0 * 0.25, 4.0 * 0.25])  # pixel centres 4.5..7.5, 2.5..5.5


def test_sliding_recordings_are_unchanged_by_the_static_ones(tmp_path):
    """Static contacts draw the same random numbers: every sliding recording is byte-identical to
    the same seed's recording without any static contact."""
    with_static, without = tmp_path / "a", tmp_path / "b"
    synth.generate(with_static, seed=5, items_indoor=3, items_outdoor=1, frames=5, size=16, static_fraction=0.5)
    synth.generate(without, seed=5, items_indoor=3, items_outdoor=1, frames=5, size=16, static_fraction=0.0)
    slides = _slides(with_static)
    assert 0 < sum(slides.values()) < len(slides) and all(_slides(without).values())
    for (scene, item, sensor), slide in slides.items():
        same = [(with_static / f"data_{scene}/{item}/{sensor}/{t}.png").read_bytes()
                == (without / f"data_{scene}/{item}/{sensor}/{t}.png").read_bytes() for t in range(5)]
        assert all(same) if slide else not all(same), (scene, item, sensor)
    for rel in ("index.csv", "labels.csv", "contact_indoor.csv"):
        assert (with_static / rel).read_bytes() == (without / rel).read_bytes()
