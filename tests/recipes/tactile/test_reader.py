import csv
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sensorium.data.bad_samples import collate_skipping
from sensorium.errors import ConfigError, DataError
from sensorium.recipes.tactile.reader import (
    SENSORS,
    STATIC_FRAME,
    TactileSequenceDataset,
    read_index_csv,
    read_tacquad,
    split_windows,
)
from sensorium.recipes.tactile.synth import generate


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tacquad")
    settings = generate(root, seed=0, items_indoor=3, items_outdoor=1, frames=6, size=32)
    return root, settings


@pytest.fixture
def root_copy(synth_root, tmp_path):
    root = tmp_path / "tacquad"
    shutil.copytree(synth_root[0], root)
    return root


def _contact_rows(root, scene="indoor"):
    return list(csv.reader(open(root / f"contact_{scene}.csv")))


def _sizes(settings):
    return {k: tuple(v) for k, v in settings["frame_sizes"].items()}


# --- round trip -------------------------------------------------------------------------------------
def test_tacquad_round_trip_windows_labels_sensors(synth_root):
    root, settings = synth_root
    windows = read_tacquad(root, labels_csv="labels.csv")
    labels = {(r["scene"], r["item"]): int(r["label"]) for r in csv.DictReader(open(root / "labels.csv"))}
    expected = 0
    for scene in ("indoor", "outdoor"):
        for item, *bounds in _contact_rows(root, scene):
            bounds = list(map(int, bounds))
            expected += sum(bounds[2 * k + 1] - bounds[2 * k] - 2 for k in range(3))
    assert len(windows) == expected == settings["windows"]
    for w in windows:
        scene, item = w.group.split("/")
        assert w.label == labels[(scene, item)]
        folders = {p.rsplit("/", 2)[0] for p in w.paths}
        assert len(folders) == 1 and w.paths[0].split("/")[-2] == SENSORS[w.sensor]
        ts = [int(p.rsplit("/", 1)[1].removesuffix(".png")) for p in w.paths]
        assert ts == list(range(ts[0], ts[0] + 4))  # frames t-3..t
    assert {w.sensor for w in windows} == {0, 1, 2}


def test_contact_ranges_bound_the_windows(synth_root):
    root, _ = synth_root
    item, gs_start, gs_end = _contact_rows(root)[0][:3]
    gelsight = [w for w in read_tacquad(root, scenes=["indoor"])
                if w.group == f"indoor/{item}" and w.sensor == 0]
    first = [int(p.rsplit("/", 1)[1][:-4]) for p in gelsight[0].paths]
    last = [int(p.rsplit("/", 1)[1][:-4]) for p in gelsight[-1].paths]
    assert first[0] == int(gs_start) and last[-1] == int(gs_end)
    # AnyTouch's rule: windows end at every contact frame t >= 3, reaching before the range
    reach = [w for w in read_tacquad(root, scenes=["indoor"], reach_before_contact=True)
             if w.group == f"indoor/{item}" and w.sensor == 0]
    assert len(reach) == int(gs_end) - max(int(gs_start), 3) + 1
    assert reach[0].paths[-1].endswith(f"/{max(int(gs_start), 3)}.png")


def test_dataset_item_contract(synth_root):
    root, settings = synth_root
    data = TactileSequenceDataset.from_tacquad(root, image_size=32, labels_csv="labels.csv",
                                               frame_sizes=_sizes(settings))
    sample = data[5]
    assert set(sample) == {"frames", "sensor", "label", "index", "force", "contact_mm", "slip"}
    assert sample["frames"].shape == (4, 3, 32, 32) and sample["frames"].dtype == torch.float32
    assert 0.0 <= sample["frames"].min() and sample["frames"].max() <= 1.0
    for key in ("sensor", "label", "index", "slip"):
        assert sample[key].dtype == torch.int64 and sample[key].dim() == 0
    assert sample["index"].item() == 5 and sample["label"].item() >= 0
    # no frame labels attached: unknown (the datamodule attaches them)
    assert sample["force"].isnan() and sample["contact_mm"].shape == (2,) and sample["contact_mm"].isnan().all()
    assert sample["slip"].item() == -1
    # frame t (the static task's frame) is the window's last file, resized to image_size
    window = data.windows[5]
    png = Image.open(window.paths[STATIC_FRAME]).resize((32, 32), Image.BILINEAR)
    expected = torch.from_numpy(np.array(png)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(sample["frames"][STATIC_FRAME], expected)
    batch = collate_skipping([data[i] for i in range(4)])
    assert batch["frames"].shape == (4, 4, 3, 32, 32) and batch["skipped"].item() == 0


def test_generic_index_reads_the_same_windows(synth_root):
    root, _ = synth_root
    from_index = read_index_csv(root / "index.csv")
    from_tacquad = read_tacquad(root, labels_csv="labels.csv")
    key = lambda w: (tuple(str(p) for p in w.paths), w.sensor, w.label)  # noqa: E731
    assert sorted(map(key, from_index)) == sorted(map(key, from_tacquad))
    data = TactileSequenceDataset(from_index, image_size=16)
    assert data[0]["frames"].shape == (4, 3, 16, 16)


def test_unlabelled_rows_get_minus_one(synth_root, tmp_path):
    root, _ = synth_root
    rows = list(csv.DictReader(open(root / "index.csv")))[:3]
    path = tmp_path / "unlabelled.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame_0", "frame_1", "frame_2", "frame_3", "sensor"])
        writer.writerows([[str(root / r[f"frame_{k}"]) for k in range(4)] + [r["sensor"]] for r in rows])
    assert [w.label for w in read_index_csv(path)] == [-1, -1, -1]
    assert {w.label for w in read_tacquad(root)} == {-1}  # no labels file given


def test_split_keeps_objects_together(synth_root):
    root, _ = synth_root
    windows = read_tacquad(root)
    train, val, test = split_windows(windows, 0.25, 0.25, seed=1)
    groups = [{w.group for w in part} for part in (train, val, test)]
    assert len(train) + len(val) + len(test) == len(windows)
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert all(groups)


# --- bad input: one DataError naming the file -------------------------------------------------------
def _first_frame_folder(root):
    item = _contact_rows(root)[0][0]
    return root / "data_indoor" / item / "gelsight"


def test_missing_frame_names_the_file(root_copy):
    missing = _first_frame_folder(root_copy) / "4.png"
    missing.unlink()
    with pytest.raises(DataError) as info:
        read_tacquad(root_copy)
    assert info.value.path == str(missing) and "missing frame" in info.value.problem


def test_unreadable_frame_names_the_file(root_copy):
    broken = _first_frame_folder(root_copy) / "5.png"
    broken.write_bytes(b"not a png at all")
    data = TactileSequenceDataset.from_tacquad(root_copy, image_size=32)
    index = next(i for i, w in enumerate(data.windows) if str(broken) in w.paths)
    with pytest.raises(DataError) as info:
        data[index]
    assert info.value.path == str(broken) and "unreadable" in info.value.problem


def test_row_pointing_outside_the_data_names_the_folder(root_copy):
    rows = _contact_rows(root_copy)
    rows[1][0] = "no_such_item"
    with open(root_copy / "contact_indoor.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError) as info:
        read_tacquad(root_copy)
    assert "no_such_item" in info.value.path and "outside the data" in info.value.problem


@pytest.mark.parametrize("bounds", [(3, 5), (4, 2)])
def test_range_shorter_than_four_frames_names_the_index(root_copy, bounds):
    rows = _contact_rows(root_copy)
    rows[0][3:5] = map(str, bounds)  # the digit range
    with open(root_copy / "contact_indoor.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError) as info:
        read_tacquad(root_copy)
    assert info.value.path.endswith("contact_indoor.csv") and "row 1: digit frame range" in info.value.problem


def test_malformed_rows_and_missing_index_name_the_file(root_copy):
    (root_copy / "contact_outdoor.csv").write_text("item_x,1,2,3\n")
    with pytest.raises(DataError, match=r"contact_outdoor.csv: row 1: expected 7 columns"):
        read_tacquad(root_copy)
    (root_copy / "contact_outdoor.csv").unlink()
    with pytest.raises(DataError, match="contact_outdoor.csv: missing TacQuad index"):
        read_tacquad(root_copy)


def test_a_header_row_is_accepted(root_copy):
    rows = _contact_rows(root_copy)
    with open(root_copy / "contact_indoor.csv", "w", newline="") as f:
        csv.writer(f).writerows([["item", "gs_start", "gs_end", "digit_start", "digit_end", "duragel_start",
                                  "duragel_end"], *rows])
    assert len(read_tacquad(root_copy, scenes=["indoor"])) > 0


@pytest.mark.parametrize("case", ["size", "declared_size", "gray", "rgba"])
def test_wrong_size_or_channels_name_the_file(root_copy, synth_root, case):
    _, settings = synth_root
    target = _first_frame_folder(root_copy) / "5.png"
    H, W = settings["frame_sizes"]["gelsight"]
    image = {
        "size": Image.new("RGB", (W + 4, H)),
        "declared_size": Image.new("RGB", (W + 4, H)),
        "gray": Image.new("L", (W, H)),
        "rgba": Image.new("RGBA", (W, H)),
    }[case]
    image.save(target)
    if case == "declared_size":  # every frame of the window resized alike: caught by frame_sizes
        for t in range(6):
            image.save(target.parent / f"{t}.png")
    data = TactileSequenceDataset.from_tacquad(root_copy, image_size=32, frame_sizes=_sizes(settings))
    index = next(i for i, w in enumerate(data.windows) if str(target) in w.paths)
    with pytest.raises(DataError) as info:
        data[index]
    first_of_window = data.windows[index].paths[0]
    assert info.value.path == (first_of_window if case == "declared_size" else str(target))
    assert ("channel" in info.value.problem) == (case in ("gray", "rgba"))


def test_generic_index_errors_name_the_file(synth_root, tmp_path):
    root, _ = synth_root
    rows = list(csv.DictReader(open(root / "index.csv")))[:2]
    path = tmp_path / "index.csv"

    def write(sensor, frame0):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["frame_0", "frame_1", "frame_2", "frame_3", "sensor", "label"])
            for r in rows:
                rest = [str(root / r[f"frame_{k}"]) for k in (1, 2, 3)]
                writer.writerow([frame0, *rest, sensor, r["label"]])

    write("gelsight", str(tmp_path / "gone.png"))
    with pytest.raises(DataError) as info:
        read_index_csv(path)
    assert info.value.path == str(tmp_path / "gone.png")
    write("tac3d", str(root / rows[0]["frame_0"]))
    with pytest.raises(DataError, match=r"index.csv: row 2: unknown sensor 'tac3d'"):
        read_index_csv(path)


# --- skip policy ------------------------------------------------------------------------------------
def test_skip_policy_logs_and_counts(root_copy, caplog):
    folder = _first_frame_folder(root_copy)
    (folder / "4.png").unlink()  # index-time problem: the windows of this range are dropped
    rows = _contact_rows(root_copy)
    rows[1][0] = "no_such_item"  # a second one
    with open(root_copy / "contact_indoor.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    other = root_copy / "data_outdoor" / "outdoor_000" / "digit" / "5.png"
    other.write_bytes(b"garbage")  # load-time problem: the sample comes back as None

    with caplog.at_level(logging.WARNING, logger="sensorium.data"):
        data = TactileSequenceDataset.from_tacquad(root_copy, image_size=32, on_bad_sample="skip")
    assert len(data.skipped) == 4  # gelsight range of row 1, all three sensors of row 2
    assert sum("skipping bad sample" in r.message for r in caplog.records) == 4
    assert any("skipped 4 bad index entries" in r.message for r in caplog.records)
    assert all(str(folder / "4.png") not in w.paths for w in data.windows)

    bad = [i for i, w in enumerate(data.windows) if str(other) in w.paths]
    good = next(i for i in range(len(data)) if i not in bad)
    with caplog.at_level(logging.WARNING, logger="sensorium.data"):
        batch = collate_skipping([data[i] for i in [*bad, good]])
    assert batch["skipped"].item() == len(bad) > 0 and batch["frames"].shape[0] == 1
    assert str(other) in caplog.text


# --- frame labels ---------------------------------------------------------------------------------------
def test_windows_carry_the_frame_labels_of_frame_t(synth_root):
    from sensorium.recipes.tactile.datamodule import TactileDataModule

    root, _ = synth_root
    rows = {str(root / r["path"]): r for r in csv.DictReader((root / "frame_labels.csv").read_text().splitlines())}
    data = TactileDataModule(str(root), image_size=16, batch_size=2, eval_batch_size=4)
    data.setup("fit")
    windows = [w for split in data.windows.values() for w in split]
    for w in windows:
        row = rows[w.paths[STATIC_FRAME]]  # the static frame t, the last of the window
        assert w.force == pytest.approx(float(row["force_n"])) and w.force > 0  # windows lie inside contact
        assert w.contact_mm == pytest.approx((float(row["contact_x_mm"]), float(row["contact_y_mm"])))
        assert w.slip == int(row["slip"])
    assert {w.slip for w in windows} == {0, 1}
    sample = data.datasets["train"][0]
    window = data.windows["train"][0]
    assert sample["force"].item() == pytest.approx(window.force)
    assert sample["contact_mm"].tolist() == pytest.approx(list(window.contact_mm))
    assert sample["slip"].item() == window.slip


def test_without_a_frame_labels_file_the_windows_stay_unknown_and_it_is_said(root_copy, caplog):
    from sensorium.recipes.tactile.datamodule import TactileDataModule

    (root_copy / "frame_labels.csv").unlink()  # as on real TacQuad
    data = TactileDataModule(str(root_copy), image_size=16, batch_size=2, eval_batch_size=4)
    with caplog.at_level(logging.INFO, logger="sensorium.recipes.tactile.datamodule"):
        data.setup("fit")
    assert "frame_labels.csv: the force / contact / slip probes are skipped" in caplog.text
    windows = [w for split in data.windows.values() for w in split]
    assert all(np.isnan(w.force) and w.slip == -1 for w in windows)


def test_frame_labels_resolve_paths_of_the_generic_index_too(synth_root):
    from sensorium.recipes.tactile.reader import attach_frame_labels, read_frame_labels

    root, _ = synth_root
    labels = read_frame_labels(root / "frame_labels.csv")
    windows = attach_frame_labels(read_index_csv(root / "index.csv"), labels)
    assert all(w.force > 0 and w.slip in (0, 1) for w in windows)


@pytest.mark.parametrize("row, problem", [
    ("a.png,x,,,", "row 2: force_n / contact_x_mm / contact_y_mm must be numbers or empty"),
    ("a.png,1.0,2.0,,1", "row 2: give both contact_x_mm and contact_y_mm, or neither"),
    ("a.png,1.0,2.0,3.0,2", "row 2: slip must be 0, 1 or empty, got '2'"),
    ("a.png,-1.0,,,", "row 2: force_n -1.0 is negative"),
])
def test_malformed_frame_labels_name_the_file_and_row(tmp_path, row, problem):
    from sensorium.recipes.tactile.reader import read_frame_labels

    path = tmp_path / "frame_labels.csv"
    path.write_text("path,force_n,contact_x_mm,contact_y_mm,slip\n" + row + "\n")
    with pytest.raises(DataError, match=str(path)) as error:
        read_frame_labels(path)
    assert problem in str(error.value)
    path.write_text("path,force\na.png,1\n")
    with pytest.raises(DataError, match="header lacks force_n, contact_x_mm, contact_y_mm, slip"):
        read_frame_labels(path)


# --- reference frames ------------------------------------------------------------------------------
def test_windows_name_frame_0_as_the_reference_when_contact_starts_later(synth_root):
    root, settings = synth_root
    windows = read_tacquad(root)
    starts = {(scene, row[0], sensor_id): int(row[1 + 2 * sensor_id])
              for scene in ("indoor", "outdoor") for row in _contact_rows(root, scene) for sensor_id in range(3)}
    for w in windows:
        scene, item = w.group.split("/")
        assert starts[(scene, item, w.sensor)] > 0  # the generator's contact never starts at frame 0
        assert w.reference == str(root / f"data_{scene}" / item / SENSORS[w.sensor] / "0.png")
    data = TactileSequenceDataset(windows, image_size=32, frame_sizes=_sizes(settings), reference=True)
    sample = data[3]
    png = Image.open(windows[3].reference).resize((32, 32), Image.BILINEAR)
    torch.testing.assert_close(sample["reference"], torch.from_numpy(np.array(png)).permute(2, 0, 1).float() / 255)
    assert "reference" not in TactileSequenceDataset(windows, image_size=32)[3]  # only when asked for


def test_a_recording_in_contact_from_frame_0_has_no_reference_and_asking_for_one_names_the_row(root_copy):
    rows = _contact_rows(root_copy)
    rows[0][1] = "0"  # gelsight of the first indoor item: in contact from its first frame
    with open(root_copy / "contact_indoor.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    windows = [w for w in read_tacquad(root_copy, scenes=["indoor"]) if w.group == f"indoor/{rows[0][0]}"]
    without = [w for w in windows if w.sensor == 0]
    assert without and all(w.reference == "" for w in without)
    assert all(w.reference for w in windows if w.sensor != 0)
    with pytest.raises(DataError, match="no reference frame") as error:
        TactileSequenceDataset(without, image_size=16, reference=True)[0]
    assert "contact_indoor.csv row 1" in str(error.value)


def test_generic_index_reference_column(synth_root, tmp_path):
    root, _ = synth_root
    rows = list(csv.DictReader(open(root / "index.csv")))
    with open(tmp_path / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0], "reference"])
        writer.writeheader()
        for row in rows[:3]:
            absolute = {k: str(root / v) if k.startswith("frame_") else v for k, v in row.items()}
            writer.writerow(absolute | {"reference": str(root / row["frame_0"]).rsplit("/", 1)[0] + "/0.png"})
    windows = read_index_csv(tmp_path / "index.csv")
    assert all(w.reference.endswith("/0.png") for w in windows)
    sample = TactileSequenceDataset(windows, image_size=16, reference=True)[0]
    assert sample["reference"].shape == (3, 16, 16)
    # a reference that is not there: one message naming it
    text = (tmp_path / "index.csv").read_text().replace("/0.png", "/99.png", 1)
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DataError, match="missing reference frame") as error:
        read_index_csv(tmp_path / "index.csv")
    assert "99.png" in str(error.value)


def test_with_reference_frames_training_batches_go_without_and_evaluation_batches_carry_them(synth_root):
    from sensorium.recipes.tactile.datamodule import TactileDataModule

    root, _ = synth_root
    dm = TactileDataModule(root=str(root), image_size=16, batch_size=2, eval_batch_size=4, reference_frames=True,
                           val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert "reference" not in train and train["frames"].shape[1:] == (4, 3, 16, 16)
    bank = next(iter(dm.val_dataloader()[1]))  # the training windows as the probes' bank
    assert bank["reference"].shape == (len(bank["frames"]), 3, 16, 16)
    assert dm.datasets["train"].reference  # the shared dataset keeps them for evaluation


def test_training_references_put_each_windows_reference_frame_in_the_training_batches(synth_root):
    from sensorium.recipes.tactile.datamodule import TactileDataModule

    root, _ = synth_root
    dm = TactileDataModule(root=str(root), image_size=16, batch_size=2, reference_frames=True,
                           training_references=True, val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["reference"].shape == (2, 3, 16, 16)
    # Frame 0 of the recording, before contact: not the window's frames.
    assert not any(torch.equal(train["reference"][0], frame) for frame in train["frames"][0])
    with pytest.raises(ConfigError, match="reference_frames"):
        TactileDataModule(root=str(root), training_references=True)
