"""The welding reader and the media decoders: label mapping, the round trip with the synthetic
generator, TRAIN-only sensor statistics, and one clear DataError per kind of bad input (or, under
on_bad_sample="skip", a logged and counted skip while the rest still loads)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from sensorium.data import media
from sensorium.errors import DataError
from sensorium.recipes.welding.reader import (
    MODALITIES,
    SENSOR_COLUMNS,
    WELDING_LABELS,
    SensorStats,
    WeldingDataset,
    WeldingPreprocess,
    category_to_label,
    choose_images,
    compute_sensor_stats,
    read_manifest,
    read_sensor_csv,
    resample_series,
    select_split,
)
from sensorium.recipes.welding.synth import SynthSizes, generate

SIZES = SynthSizes(video_size=32, video_frames=8, image_size=32, num_images=3, audio_seconds=0.5)
PRE = WeldingPreprocess(num_frames=4, frame_size=24, num_images=2, image_size=24, sample_rate=8000, n_mels=16,
                        win_ms=50.0, hop_ms=25.0, audio_frames=16, sensor_length=32)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    """2 runs per class (1 TRAIN, 1 TEST), tiny sizes; shared, never modified."""
    root = tmp_path_factory.mktemp("welding")
    generate(root, seed=0, samples_per_class=2, sizes=SIZES)
    return root


@pytest.fixture
def root(dataset_root, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(dataset_root, tmp_path / "copy"))


def first_of(records, split="TRAIN"):
    return next(r for r in records if r.split == split)


# --- labels --------------------------------------------------------------------------------------


def test_label_order_is_the_published_one():
    assert WELDING_LABELS[0] == "Good" and WELDING_LABELS[4] == "Porosity_w_Excessive_Penetration"
    assert [category_to_label(name) for name in WELDING_LABELS] == list(range(12))


@pytest.mark.parametrize("name, label", [
    ("good", 0), ("GOOD", 0), ("lack of fusion", 3), ("Lack Of_Fusion", 3), ("crater  cracks", 9),
    ("porosity w excessive penetration", 4), ("EXCESSIVE_PENETRATION", 8), (" Overlap ", 11),
    # spellings of published copies
    ("good_weld", 0), ("Good Weld", 0), ("burn_through", 7), ("Burnthrough Weld", 7), ("Warping Weld", 10),
    ("Porosity w/ EP", 4), ("Porosity with Excessive Penetration", 4),
])
def test_category_names_are_case_space_and_underscore_insensitive(name, label):
    assert category_to_label(name) == label


@pytest.mark.parametrize("name", ["", "Porous", "Good_Weld_2", "Excessive"])
def test_unknown_category_is_an_error_listing_the_known_ones(name):
    with pytest.raises(ValueError, match="unknown category.*Crater_Cracks"):
        category_to_label(name)


# --- round trip ----------------------------------------------------------------------------------


def test_manifest_round_trip(dataset_root):
    records = read_manifest(dataset_root)
    assert len(records) == 24 and records.skipped == []
    assert sorted(r.label for r in records) == sorted(list(range(12)) * 2)
    assert [WELDING_LABELS[r.label] for r in records] == [r.category for r in records]
    for split in ("TRAIN", "TEST"):
        assert sorted(r.label for r in select_split(records, split)) == list(range(12))
    r = records[0]
    assert r.sample_id == f"{r.metadata['DIRECTORY']}/{r.run_id}"
    assert r.directory == dataset_root / r.sample_id
    assert {"WELD_TYPE", "CURRENT_A", "VOLTAGE_V", "DIRECTORY"} <= set(r.metadata)
    names = (r.video.name, r.audio.name, r.sensor.name)
    assert names == (f"{r.run_id}.avi", f"{r.run_id}.flac", f"{r.run_id}.csv")
    assert len(r.images) == 3 and r.images == sorted(r.images) and r.present == (True, True, True, True)


def test_dataset_item_contract(dataset_root):
    records = read_manifest(dataset_root)
    stats = compute_sensor_stats(select_split(records, "TRAIN"), PRE.sensor_columns)
    ds = WeldingDataset(records, PRE, stats)
    assert torch.equal(ds.labels, torch.tensor([r.label for r in records]))
    for i in (0, 7, 23):
        item = ds[i]
        assert set(item) == {*MODALITIES, "present", "label", "index"}
        shapes = {"video": (4, 3, 24, 24), "images": (2, 3, 24, 24), "audio": (1, 16, 16), "sensor": (32, 6)}
        for m, shape in shapes.items():
            assert item[m].shape == shape and item[m].dtype == torch.float32 and torch.isfinite(item[m]).all()
        for m in ("video", "images"):
            assert 0 <= item[m].min() and item[m].max() <= 1 and item[m].std() > 0.01
        assert item["present"].dtype == torch.bool and item["present"].all()
        assert item["label"].dtype == torch.int64 and item["label"].shape == ()
        assert item["label"] == records[i].label
        assert item["index"].dtype == torch.int64 and item["index"] == i
    # standardised with TRAIN statistics: over TRAIN, each channel is centred
    train = [ds[i]["sensor"] for i, r in enumerate(records) if r.split == "TRAIN"]
    assert torch.cat(train).mean(0).abs().max() < 0.5


def test_dataset_cache_returns_the_same_tensors(dataset_root):
    records = read_manifest(dataset_root)
    ds = WeldingDataset(records[:2], PRE, None, cache=True)
    assert ds[1] is ds[1]
    assert torch.equal(ds[0]["video"], WeldingDataset(records[:2], PRE, None)[0]["video"])


def test_sensor_stats_come_from_the_records_given(root):
    records = read_manifest(root)
    train, test = select_split(records, "TRAIN"), select_split(records, "TEST")
    before = compute_sensor_stats(train)
    _scale_csv(test[0].sensor, 10.0)  # a TEST file changes: TRAIN statistics must not
    after = compute_sensor_stats(train)
    assert np.array_equal(before.mean, after.mean) and np.array_equal(before.std, after.std)
    _scale_csv(train[0].sensor, 10.0)  # a TRAIN file changes: they must
    assert not np.allclose(compute_sensor_stats(train).mean, before.mean)
    assert before.mean.dtype == np.float32 and before.columns == SENSOR_COLUMNS
    assert SensorStats.from_dict(before.to_dict()).to_dict() == before.to_dict()


def test_sensor_stats_are_pooled_over_rows(root):
    records = select_split(read_manifest(root), "TRAIN")[:3]
    rows = np.concatenate([read_sensor_csv(r.sensor)[1] for r in records])
    stats = compute_sensor_stats(records)
    np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, rows.std(0), rtol=1e-4)


# --- bad input: one DataError naming the file, or a logged and counted skip ----------------------


def _scale_csv(path: Path, factor: float) -> None:
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[3:9] = [f"{float(c) * factor:.3f}" for c in cells[3:9]]
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")


def _edit_manifest(root: Path, edit) -> None:
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(edit(lines)) + "\n")


def _missing_audio(root, r):
    r.audio.unlink()
    return r.audio


def _missing_images(root, r):
    for p in r.images:
        p.unlink()
    return r.directory / "images"


def _sensor_without_feed(root, r):
    lines = r.sensor.read_text().splitlines()
    column = lines[0].split(",").index("Feed")
    r.sensor.write_text("\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != column)
                                  for line in lines) + "\n")
    return r.sensor


def _unknown_category(root, r):
    _edit_manifest(root, lambda lines: [lines[0]] + [line.replace(f"{r.category},", "Porous,", 1)
                                                     if r.sample_id in line else line for line in lines[1:]])
    return root / "manifest.csv"


def _subdirs_missing(root, r):
    shutil.rmtree(r.directory)
    return r.directory


CHEAP_CASES = {  # found by read_manifest, before anything is decoded
    "missing audio file": (_missing_audio, "missing audio file"),
    "missing images": (_missing_images, "no post-weld images"),
    "sensor CSV without a column": (_sensor_without_feed, "lacks column.*'Feed'"),
    "unknown category": (_unknown_category, r"line \d+: unknown category 'Porous'"),
    "SUBDIRS does not exist": (_subdirs_missing, "does not exist"),
}


@pytest.mark.parametrize("case", CHEAP_CASES)
def test_cheap_checks_raise_one_error_naming_the_file(root, case):
    damage, message = CHEAP_CASES[case]
    victim = first_of(read_manifest(root))
    path = damage(root, victim)
    with pytest.raises(DataError, match=message) as error:
        read_manifest(root)
    assert error.value.path == str(path) and str(path) in str(error.value)


@pytest.mark.parametrize("case", CHEAP_CASES)
def test_cheap_checks_skip_log_and_count(root, case, caplog):
    damage, message = CHEAP_CASES[case]
    victim = first_of(read_manifest(root))
    path = damage(root, victim)
    with caplog.at_level(logging.WARNING, logger="sensorium.data"):
        records = read_manifest(root, on_bad_sample="skip")
    assert len(records) == 23 and victim.sample_id not in {r.sample_id for r in records}
    assert len(records.skipped) == 1 and records.skipped[0].path == str(path)
    assert any(str(path) in m and "skipping" in m for m in caplog.messages)
    assert any("skipped 1 of 24" in m for m in caplog.messages)


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a media file" * 64)
    return path


def _nan_in_csv(path: Path) -> Path:
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[SENSOR_COLUMNS.index("Primary Weld Current") + 3] = "nan"
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def _empty_cell_in_csv(path: Path) -> Path:
    lines = path.read_text().splitlines()
    cells = lines[9].split(",")
    cells[3] = ""
    lines[9] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


DECODE_CASES = {  # found when the sample is first read
    "undecodable video": (lambda r: _garbage(r.video), "cannot decode video"),
    "undecodable audio": (lambda r: _garbage(r.audio), "cannot decode audio"),
    "undecodable image": (lambda r: _garbage(r.images[0]), "cannot decode image"),
    "sensor CSV with NaN": (lambda r: _nan_in_csv(r.sensor), "'Primary Weld Current' has 1 NaN"),
    "sensor CSV with an empty cell": (lambda r: _empty_cell_in_csv(r.sensor), "'Pressure' has 1 NaN/empty"),
}


@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_errors_name_the_file(root, case):
    damage, message = DECODE_CASES[case]
    records = read_manifest(root)  # the cheap checks don't decode: they pass
    victim = first_of(records, "TEST")
    path = damage(victim)
    ds = WeldingDataset(records, PRE, None)
    with pytest.raises(DataError, match=message) as error:
        ds[records.index(victim)]
    assert error.value.path == str(path)
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_errors_skip_log_and_count(root, case, caplog):
    damage, _ = DECODE_CASES[case]
    records = read_manifest(root)
    victim = first_of(records, "TEST")
    path = damage(victim)
    ds = WeldingDataset(records, PRE, None, on_bad_sample="skip")
    bad = records.index(victim)
    with caplog.at_level(logging.WARNING, logger="sensorium.data"):
        items = [ds[i] for i in range(len(ds))]
    assert items[bad] is None and ds.skipped == {bad}
    assert all(item is not None for i, item in enumerate(items) if i != bad)
    assert sum(str(path) in m for m in caplog.messages) == 1


def test_nan_in_a_train_csv_stops_the_statistics(root):
    train = select_split(read_manifest(root), "TRAIN")
    path = _nan_in_csv(train[2].sensor)
    with pytest.raises(DataError, match="NaN") as error:
        compute_sensor_stats(train)
    assert error.value.path == str(path)
    assert np.isfinite(compute_sensor_stats(train, on_bad_sample="skip").mean).all()


def test_manifest_missing_a_column_fails_even_under_skip(root):
    _edit_manifest(root, lambda lines: [line.rsplit(",", 1)[0] for line in lines])  # drop SPLIT, the last
    for policy in ("error", "skip"):
        with pytest.raises(DataError, match="missing column.*SPLIT") as error:
            read_manifest(root, on_bad_sample=policy)
        assert error.value.path == str(root / "manifest.csv")


def test_missing_manifest_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_empty_split_names_the_manifest(root):
    _edit_manifest(root, lambda lines: [line.replace(",TEST", ",TRAIN") for line in lines])
    records = read_manifest(root)
    assert len(select_split(records, "train")) == 24
    with pytest.raises(DataError, match="split TEST has no samples") as error:
        select_split(records, "TEST")
    assert error.value.path == str(root / "manifest.csv")


def test_unknown_split_and_repeated_subdirs_are_row_errors(root):
    def edit(lines):
        holdout = lines[2].replace(",TRAIN", ",HOLDOUT").replace(",TEST", ",HOLDOUT")
        return lines[:2] + [holdout] + lines[3:] + [lines[1]]  # line 3: bad split; line 26 repeats line 2
    _edit_manifest(root, edit)
    with pytest.raises(DataError, match="line 3: unknown SPLIT 'HOLDOUT'"):
        read_manifest(root)
    records = read_manifest(root, on_bad_sample="skip")
    assert len(records) == 23 and len(records.skipped) == 2
    assert "line 26: SUBDIRS" in str(records.skipped[1]) and "repeats line 2" in str(records.skipped[1])


def test_allow_missing_modalities_marks_them_absent(root):
    records = read_manifest(root)
    no_audio, no_images = records[0], records[5]
    no_audio.audio.unlink()
    for p in no_images.images:
        p.unlink()
    with pytest.raises(DataError):
        read_manifest(root)
    records = read_manifest(root, allow_missing_modalities=True)
    assert len(records) == 24
    assert records[0].audio is None and records[0].present == (True, True, False, True)
    assert records[5].images == [] and records[5].present == (True, False, True, True)
    ds = WeldingDataset(records, PRE, None)
    a, b, c = ds[0], ds[5], ds[1]
    assert a["present"].tolist() == [True, True, False, True] and not a["audio"].any() and a["video"].any()
    assert b["present"].tolist() == [True, False, True, True] and not b["images"].any()
    assert a["audio"].shape == c["audio"].shape and b["images"].shape == c["images"].shape
    assert c["present"].all()


def test_a_run_with_no_modality_at_all_is_an_error(root):
    r = read_manifest(root)[3]
    for p in [r.video, r.audio, r.sensor, *r.images]:
        p.unlink()
    with pytest.raises(DataError, match="no modality file at all") as error:
        read_manifest(root, allow_missing_modalities=True)
    assert error.value.path == str(r.directory)


def test_renamed_files_are_found_when_unique(root):
    r = read_manifest(root)[0]
    r.video.rename(r.directory / "weld.avi")
    assert read_manifest(root)[0].video == r.directory / "weld.avi"
    shutil.copy(r.directory / "weld.avi", r.directory / "other.mp4")
    with pytest.raises(DataError, match="several video files"):
        read_manifest(root)


# --- sensor series --------------------------------------------------------------------------------


def test_sensor_csv_clock_times_and_midnight(tmp_path):
    path = tmp_path / "run.csv"
    header = ",".join(["Date", "Time", "Part No", *SENSOR_COLUMNS, "Remarks"])
    rows = ["01/02/2023,23:59:59.800,x,1,2,3,4,5,6,", "01/03/2023,23:59:59.900,x,1,2,3,4,5,6,",
            "01/03/2023,00:00:00.000,x,1,2,3,8,5,6,ok"]
    path.write_text("\n".join([header, *rows]) + "\n")
    t, x = read_sensor_csv(path)
    np.testing.assert_allclose(t - t[0], [0.0, 0.1, 0.2], atol=1e-9)
    assert x.shape == (3, 6) and x[2, 3] == 8


def test_resample_is_linear_over_the_time_column():
    t = np.array([0.0, 1.0, 3.0, 4.0])  # uneven steps
    x = np.stack([t * 2, -t], axis=1)
    y = resample_series(t, x, 9)
    np.testing.assert_allclose(y, np.stack([np.linspace(0, 8, 9), -np.linspace(0, 4, 9)], axis=1))


def test_backwards_timestamps_fall_back_to_row_order_with_a_warning(caplog):
    t = np.array([0.0, 2.0, 1.0, 3.0])
    x = np.arange(4.0)[:, None]
    with caplog.at_level(logging.WARNING, logger="sensorium.data"):
        y = resample_series(t, x, 7, "log.csv")
    np.testing.assert_allclose(y[:, 0], np.linspace(0, 3, 7))
    assert any("log.csv" in m and "not increasing" in m for m in caplog.messages)


# --- media decoders -------------------------------------------------------------------------------


def _counting_video(path: Path, frames: int, gop: int, step: int = 2) -> None:
    """Frame k shows grey level step * k (so the decoded level tells which frame it was)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"qscale": "2", "g": str(gop)}
        for k in range(frames):
            image = np.full((32, 48, 3), step * k, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize("frames, gop", [(20, 10), (120, 12), (120, 120)])
def test_read_video_samples_frames_uniformly(tmp_path, frames, gop):
    path = tmp_path / ("clip.avi" if gop != 120 else "clip.mp4")
    step = 240 // frames
    _counting_video(path, frames, gop, step)
    video = media.read_video(path, 6, (16, 20))
    assert video.shape == (6, 3, 16, 20) and video.dtype == torch.float32
    decoded = (video[:, :, 8, 10].mean(1) * 255 / step).round().long()
    expected = torch.from_numpy(media.sample_indices(frames, 6))
    assert (decoded - expected).abs().max() <= (1 if step < 4 else 0)  # lossy codec: a grey level of slack


def test_read_video_more_frames_than_the_clip_repeats(tmp_path):
    path = tmp_path / "short.avi"
    _counting_video(path, 3, 10, step=40)
    decoded = (media.read_video(path, 7, (8, 8))[:, 0, 4, 4] * 255 / 40).round().long()
    assert decoded.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_read_image_resizes_and_keeps_colour(tmp_path):
    pixels = np.zeros((90, 200, 3), np.uint8)
    pixels[..., 0] = 200
    pixels[:, 100:, 2] = 250
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = media.read_image(tmp_path / "photo.png", (24, 24))
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert abs(image[0].mean().item() - 200 / 255) < 0.01
    assert image[2, :, :10].max() < 0.05 and image[2, :, -10:].min() > 0.9


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    rate = 16000
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.ones_like(t)
    sf.write(tmp_path / "a.wav", np.stack([left, right], 1), rate)
    wave = media.read_audio(tmp_path / "a.wav", 8000)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    assert abs(wave[1000:7000].mean() - 0.05) < 0.01  # the mean of the two channels
    window = media.read_audio(tmp_path / "a.wav", 8000, max_seconds=0.25)
    assert window.shape == (2000,)


def test_log_mel_puts_a_tone_in_its_band_and_pads_to_length():
    rate = 8000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(rate // 2) / rate)).astype(np.float32)
    spec = media.log_mel(tone, rate, n_mels=32, win_ms=50, hop_ms=25, num_frames=40)
    assert spec.shape == (1, 32, 40)
    frames = 1 + len(tone) // 200
    assert torch.all(spec[0, :, frames:] == np.log(1e-6))  # padded with the floor
    peak = spec[0, :, 5].argmax().item()
    from transformers.audio_utils import hertz_to_mel
    edges = np.linspace(hertz_to_mel(20.0), hertz_to_mel(4000.0), 34)
    assert abs(edges[peak + 1] - hertz_to_mel(1000.0)) < 2 * (edges[1] - edges[0])
    assert media.log_mel(tone, rate, 32, 50, 25, num_frames=8).shape == (1, 32, 8)


def test_choose_images_spreads_and_repeats_the_last():
    paths = [Path(f"{k}.jpg") for k in range(5)]
    assert choose_images(paths, 3) == [paths[0], paths[2], paths[4]]
    assert choose_images(paths[:2], 4) == [paths[0], paths[1], paths[1], paths[1]]
