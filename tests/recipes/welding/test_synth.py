"""The synthetic welding generator: the signature table's property (no single modality separates
the 12 classes, all four do), the published layout, determinism, and that each signature is in
the signals it claims to be in, beyond the nuisance."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sensorium.recipes.welding import synth
from sensorium.recipes.welding.reader import SENSOR_COLUMNS, WELDING_LABELS, category_to_label
from sensorium.recipes.welding.synth import SIGNATURES, SynthSizes, generate, main

SIZES = SynthSizes(video_size=32, video_frames=8, image_size=32, num_images=3, audio_seconds=0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, samples_per_class=3, test_fraction=1 / 3, sizes=SIZES)
    return root


def manifest_rows(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def contents(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- the signature table -------------------------------------------------------------------------


def test_no_single_modality_separates_the_classes_but_all_four_do():
    assert tuple(SIGNATURES) == WELDING_LABELS
    groups = {m: len({getattr(s, m) for s in SIGNATURES.values()}) for m in synth.Signature._fields}
    assert groups == {"video": 6, "images": 8, "audio": 6, "sensor": 9}
    assert len(set(SIGNATURES.values())) == 12  # the 4-tuples are unique
    # Best accuracy from one modality alone (perfect signature detection, guessing within a group):
    # one correct class per group.
    assert max(groups.values()) / 12 <= 0.75
    # Classes only one modality tells apart: Good/Warping (images), Excessive_Convexity/Overlap and
    # the two porosities (sensor). Each modality must be learnt; none is redundant for those pairs.
    for m in synth.Signature._fields:
        others = [f for f in synth.Signature._fields if f != m]
        tied = Counter(tuple(getattr(s, f) for f in others) for s in SIGNATURES.values())
        assert (max(tied.values()) >= 2) == (m in ("images", "sensor")), m


# --- layout ---------------------------------------------------------------------------------------


def test_manifest_has_the_published_columns_and_splits(tiny):
    header = (tiny / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header == ["CATEGORY", "WELD_TYPE", "THICKNESS_MM", "STEEL_TYPE", "SAMPLES", "CURRENT_A",
                      "VOLTAGE_V", "GAS_BAR", "ROBOT_SPEED_CPM", "DIRECTORY", "SUBDIRS", "SPLIT"]
    rows = manifest_rows(tiny)
    assert len(rows) == 36
    assert Counter(r["CATEGORY"] for r in rows) == Counter({c: 3 for c in WELDING_LABELS})
    assert Counter((r["CATEGORY"], r["SPLIT"]) for r in rows) == Counter(
        {**{(c, "TEST"): 1 for c in WELDING_LABELS}, **{(c, "TRAIN"): 2 for c in WELDING_LABELS}})
    for r in rows:
        run_id = r["SUBDIRS"].split("/")[-1]
        assert r["SUBDIRS"] == f"{r['DIRECTORY']}/{run_id}"
        assert re.fullmatch(r"\d\d-\d\d-23-\d{4}-\d\d", run_id)
        assert int(run_id[-2:]) == synth.CLASS_CODES[r["CATEGORY"]]
        assert category_to_label(r["CATEGORY"]) == WELDING_LABELS.index(r["CATEGORY"])
        assert float(r["CURRENT_A"]) > 0 and r["STEEL_TYPE"] in r["DIRECTORY"]


def test_each_run_holds_real_media_files(tiny):
    row = manifest_rows(tiny)[7]
    run = tiny / row["SUBDIRS"]
    run_id = run.name
    expected = [f"{run_id}.avi", f"{run_id}.flac", f"{run_id}.csv", "images"]
    assert sorted(p.name for p in run.iterdir()) == sorted(expected)
    with av.open(str(run / f"{run_id}.avi")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert stream.codec_context.name == "mpeg4" and len(frames) == 8 and frames[0].shape == (32, 32, 3)
    wave, rate = sf.read(run / f"{run_id}.flac")
    assert rate == 16000 and wave.shape == (8000,) and 0 < np.abs(wave).max() <= 1
    photos = sorted((run / "images").iterdir())
    assert [p.name for p in photos] == ["view_0.jpg", "view_1.jpg", "view_2.jpg"]
    assert Image.open(photos[0]).size == (32, 32)
    lines = (run / f"{run_id}.csv").read_text().splitlines()
    assert lines[0] == ("Date,Time,Part No,Pressure,CO2 Weld Flow,Feed,Primary Weld Current,Wire Consumed,"
                        "Secondary Weld Voltage,Remarks")
    assert 220 <= len(lines) - 1 <= 360
    first = lines[1].split(",")
    assert re.fullmatch(r"\d\d/\d\d/2023", first[0]) and re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", first[1])
    assert first[2] == run_id and len(first) == 10


def test_mp4_videos(tmp_path):
    sizes = SynthSizes(video_size=32, video_frames=8, image_size=32, num_images=1, audio_seconds=0.5,
                       video_format="mp4")
    generate(tmp_path, seed=0, samples_per_class=1, sizes=sizes)
    videos = list(tmp_path.rglob("*.mp4"))
    assert len(videos) == 12 and not list(tmp_path.rglob("*.avi"))


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    generate(tmp_path / "a", seed=5, samples_per_class=1, sizes=SIZES)
    generate(tmp_path / "b", seed=5, samples_per_class=1, sizes=SIZES)
    generate(tmp_path / "c", seed=6, samples_per_class=1, sizes=SIZES)
    a, b, c = contents(tmp_path / "a"), contents(tmp_path / "b"), contents(tmp_path / "c")
    assert a == b and len(a) == 12 * 6 + 1  # avi, flac, csv, 3 photos per run; the manifest
    shared = set(a.values()) & set(c.values())
    assert not shared  # not one file in common


def test_a_run_does_not_depend_on_the_others(tmp_path):
    """Each run has its own generator: more runs per class leave the first ones unchanged."""
    generate(tmp_path / "one", seed=2, samples_per_class=1, test_fraction=0.0, sizes=SIZES)
    generate(tmp_path / "two", seed=2, samples_per_class=2, test_fraction=0.0, sizes=SIZES)
    one, two = contents(tmp_path / "one"), contents(tmp_path / "two")
    media = {k: v for k, v in one.items() if k != "manifest.csv" and "-0001-" in k}
    assert media and all(two.get(k) == v for k, v in media.items())


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--seed", "1", "--samples-per-class", "1", "--test-fraction", "0",
                 "--video-size", "32", "--video-frames", "8", "--image-size", "32", "--num-images", "2",
                 "--audio-seconds", "0.5"]) == 0
    assert "wrote 12 welding runs" in capsys.readouterr().out
    rows = manifest_rows(out)
    assert len(rows) == 12 and {r["SPLIT"] for r in rows} == {"TRAIN"}
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--test-fraction", "1.5"])


# --- each signature is in its signal, beyond the nuisance ------------------------------------------


def draws(n: int = 8):
    """n independent generators with their own nuisance draw."""
    for seed in range(n):
        rng = np.random.default_rng([99, seed])
        yield rng, synth.Nuisance(speed=rng.uniform(0, 1), exposure=rng.uniform(0.75, 1.25),
                                  tint=1 + rng.uniform(-1, 1) * np.array([0.12, 0.0, -0.12]))


def video_stats(kind: str) -> np.ndarray:
    """Per draw: mean arc peak, its spread over time, bright area, and its peak-to-median ratio."""
    out = []
    for rng, nz in draws():
        lum = synth.render_video(rng, kind, nz, 20, 64).mean(-1) / 255  # (T, S, S)
        top = np.sort(lum.reshape(20, -1), axis=1)[:, -6:].mean(1)
        area = (lum > np.median(lum) + 0.45).mean(axis=(1, 2))
        out.append([top.mean(), top.std(), area.mean(), area.max() / (np.median(area) + 1e-3)])
    return np.array(out)


def test_video_signatures():
    calm, dim, bright = video_stats("calm"), video_stats("dim"), video_stats("bright")
    flicker, flash = video_stats("flicker"), video_stats("flash")
    assert dim[:, 0].max() < calm[:, 0].min()  # a dim arc, whatever the exposure
    assert bright[:, 2].min() > 2 * calm[:, 2].max()  # a large bright arc
    assert flicker[:, 1].min() > 2 * calm[:, 1].max()  # brightness jumps between frames
    assert flash[:, 3].min() > 2 * calm[:, 3].max()  # a short, large bright blob


def test_sparks_are_small_bright_spots_away_from_the_arc():
    def spots(kind):
        counts = []
        for rng, nz in draws():
            lum = synth.render_video(rng, kind, nz, 20, 64).mean(-1) / 255
            peak = lum.reshape(20, -1).argmax(1)
            yy, xx = np.mgrid[0:64, 0:64]
            far = np.hypot(yy[None] - (peak // 64)[:, None, None], xx[None] - (peak % 64)[:, None, None]) > 8
            counts.append(((lum > np.median(lum) + 0.35) & far).sum() / 20)
        return np.array(counts)
    assert spots("sparks").min() > 5 * max(spots("calm").max(), 1)


def sensor_step(kind: str, channel: str) -> np.ndarray:
    """Largest ratio of the median of 8 rows to the median of the 8 rows before, inside the weld."""
    c = SENSOR_COLUMNS.index(channel)
    out = []
    for rng, nz in draws():
        setpoints = synth.SetPoints(rng.uniform(110, 190), rng.uniform(16, 24), rng.uniform(30, 55),
                                    rng.uniform(10, 22), 0.3)
        _, x = synth.render_sensor(rng, kind, nz, setpoints)
        current = x[:, 3]
        weld = np.flatnonzero(current > 0.5 * np.percentile(current, 95))
        series = x[weld[0] + 3:weld[-1] - 25, c]  # the plateau, without ignition and crater fill
        windows = np.lib.stride_tricks.sliding_window_view(series, 8)
        med = np.median(windows, axis=1)
        ratio = med[8:] / med[:-8]
        out.append(max(ratio.max(), 1 / ratio.min()))
    return np.array(out)


@pytest.mark.parametrize("kind, channel", [
    ("high_current", "Primary Weld Current"), ("low_current", "Primary Weld Current"),
    ("high_voltage", "Secondary Weld Voltage"), ("low_voltage", "Secondary Weld Voltage"),
    ("high_feed", "Feed"), ("gas_drop", "CO2 Weld Flow"), ("gas_drop_high_current", "CO2 Weld Flow"),
])
def test_sensor_faults_are_steps_larger_than_the_drift(kind, channel):
    assert sensor_step(kind, channel).min() > 1.2 > 1.15 > sensor_step("nominal", channel).max()


def test_abrupt_stop_has_no_crater_fill():
    def fill_rows(kind):
        out = []
        for rng, nz in draws():
            _, x = synth.render_sensor(rng, kind, nz, synth.SetPoints(150, 20, 40, 15, 0.3))
            rel = x[:, 3] / np.percentile(x[:, 3], 95)
            last = np.flatnonzero(rel > 0.2)[-1]
            out.append(((rel[last - 30:last + 1] > 0.25) & (rel[last - 30:last + 1] < 0.7)).sum())
        return np.array(out)
    assert fill_rows("abrupt_stop").max() <= 1 and fill_rows("nominal").min() >= 8


def band_level(wave: np.ndarray, rate: int, lo: float, hi: float) -> np.ndarray:
    """Log power in [lo, hi] Hz per 50 ms frame."""
    frames = wave[: len(wave) // 800 * 800].reshape(-1, 800)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(800), axis=1)) ** 2
    f = np.fft.rfftfreq(800, 1 / rate)
    return np.log(spectrum[:, (f >= lo) & (f < hi)].sum(1) + 1e-12)


def audio_stats(kind: str) -> np.ndarray:
    """Per draw: arc-band level with the arc on over off; hiss band with the arc on over off;
    clicks (2 ms frames of high-band energy 8x their neighbourhood's median) per second of arc."""
    from scipy.ndimage import median_filter

    out = []
    for rng, nz in draws():
        wave = synth.render_audio(rng, kind, nz, 16000, 1.6)
        arc = band_level(wave, 16000, 200, 1000)
        lo, hi = np.percentile(arc, 10), np.percentile(arc, 90)
        on, off = arc > lo + 0.6 * (hi - lo), arc < lo + 0.2 * (hi - lo)
        hiss = band_level(wave, 16000, 2600, 3300)
        high = wave - np.convolve(wave, np.ones(8) / 8, mode="same")
        energy = np.square(high[: len(high) // 32 * 32]).reshape(-1, 32).sum(1)  # 2 ms frames
        clicks = (energy > 8 * median_filter(energy, 51)).sum() / (on.sum() * 0.05)
        out.append([arc[on].mean() - arc[off].mean(), hiss[on].mean() - hiss[off].mean(), clicks])
    return np.array(out)


def test_audio_signatures():
    steady, weak, hiss, crackle = (audio_stats(k) for k in ("steady", "weak", "hiss", "crackle"))
    assert weak[:, 0].max() + 0.5 < steady[:, 0].min()  # a quiet arc over the same shop noise
    assert hiss[:, 1].min() > steady[:, 1].max() + 0.5  # the high band follows the arc
    assert crackle[:, 2].min() > 2 * max(steady[:, 2].max(), 1)  # impulsive clicks


def test_image_defects_show_up_against_a_flat_plate():
    """Same generator state, so the same plate, bead and views: the defect is the difference."""
    def dark_pixels(kind, seed):
        rng = np.random.default_rng(seed)
        nz = synth.Nuisance(0.5, 1.0, np.ones(3))
        lum = synth.render_images(rng, kind, nz, 3, 64).mean(-1) / 255
        return (lum < 0.12).mean()
    for seed in range(6):
        normal = dark_pixels("normal", seed)
        assert dark_pixels("burn_hole", seed) > normal + 0.005
        assert dark_pixels("pores", seed) > normal + 0.001
