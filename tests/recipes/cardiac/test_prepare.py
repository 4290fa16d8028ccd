"""`sensorium prepare cardiac`: synth -> prepare -> npz round trip, normalisation, splits, bad input."""

from __future__ import annotations

import csv
import gzip
import json
import logging

import nibabel as nib
import numpy as np
import pytest

from sensorium.errors import DataError
from sensorium.recipes.cardiac.prepare import (
    PrepareConfig,
    assign_splits,
    denormalise,
    load_label_volume,
    main,
    normalise,
    prepare_case,
    read_given_splits,
    run,
)
from sensorium.recipes.cardiac.reader import CARDIAC_STRUCTURES, read_split_csv, voxel_to_normalised
from sensorium.recipes.cardiac.synth import generate

SMALL = dict(surface_points=2048, volume_points=2048, near_points=2000)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cardiac_raw")
    generate(out, seed=0, cases=3, shape=(40, 40, 28), spacing=(3.0, 3.0, 4.5))
    return out


@pytest.fixture(scope="module")
def prepared(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cardiac_npz")
    assert main(["--input", str(synth_dir), "--out", str(out), "--workers", "2", "--val-fraction", "0.34",
                 "--surface-points", "2048", "--volume-points", "2048", "--near-points", "2000",
                 "--no-progress"]) == 0
    return out


def test_npz_schema(prepared):
    with np.load(prepared / "case_0000.npz") as data:
        arrays = {k: data[k] for k in data.files}
    C = len(CARDIAC_STRUCTURES)
    expected = {
        "surface_points": ((2048, 3), np.float32), "surface_normals": ((2048, 3), np.float32),
        "surface_labels": ((2048,), np.int64), "vol_points": ((2048, 3), np.float32),
        "vol_sdf": ((2048, C), np.float32), "near_points": ((2000, 3), np.float32),
        "near_sdf": ((2000, C), np.float32), "near_labels": ((2000,), np.int64), "scale": ((), np.float64),
        "offset": ((3,), np.float64), "label_values": ((C,), np.int64), "spacing": ((3,), np.float64),
        "affine": ((4, 4), np.float64), "shape": ((3,), np.int64), "near_sigmas": ((2,), np.float64),
    }
    for name, (shape, dtype) in expected.items():
        assert arrays[name].shape == shape and arrays[name].dtype == dtype, name
    assert tuple(arrays["class_names"]) == CARDIAC_STRUCTURES and str(arrays["case_id"]) == "case_0000"
    np.testing.assert_allclose(arrays["spacing"], [3.0, 3.0, 4.5])
    for name in ("surface_points", "vol_points", "near_points"):
        assert np.abs(arrays[name]).max() <= 1.0
    assert np.abs(arrays["surface_points"]).max() <= 0.9 + 1e-6  # margin left for near points
    np.testing.assert_allclose(np.linalg.norm(arrays["surface_normals"], axis=1), 1.0, atol=1e-5)
    assert set(np.unique(arrays["surface_labels"])) == set(range(C))
    np.testing.assert_array_equal(np.bincount(arrays["near_labels"]), [200] * C)  # equal per structure


def test_sdf_labels_follow_the_convention(prepared, synth_dir):
    with np.load(prepared / "case_0001.npz") as d:
        scale, offset, affine = float(d["scale"]), d["offset"], d["affine"]
        surface, labels, normals = d["surface_points"], d["surface_labels"], d["surface_normals"]
        vol, vol_sdf, near, near_sdf = d["vol_points"], d["vol_sdf"], d["near_points"], d["near_sdf"]
    half_voxel = 0.5 * 4.5 / scale  # the largest voxel side, in normalised units
    volume, _ = load_label_volume(synth_dir / "case_0001.nii.gz")
    # Inside (negative) where the nearest voxel carries the structure's label, for points clear of
    # the surface; checked on the volume and near points together.
    points = np.concatenate([vol, near])
    sdf = np.concatenate([vol_sdf, near_sdf])
    index = np.rint(np.linalg.solve(affine[:3, :3], (denormalise(points, scale, offset) - affine[:3, 3]).T).T)
    within = np.all((index >= 0) & (index < np.array(volume.shape)), axis=1)
    idx = index[within].astype(int)
    voxel_label = volume[idx[:, 0], idx[:, 1], idx[:, 2]]
    for c in range(len(CARDIAC_STRUCTURES)):
        clear = np.abs(sdf[within, c]) > 2 * half_voxel
        inside = sdf[within, c][clear] < 0
        np.testing.assert_array_equal(inside, voxel_label[clear] == c + 1)
    assert labels.shape == (2048,) and normals.shape == (2048, 3) and surface.shape == (2048, 3)
    assert np.all(np.isfinite(vol_sdf)) and np.all(np.isfinite(near_sdf))


def test_surface_samples_sit_on_their_structures_zero_level(synth_dir):
    config = PrepareConfig(surface_points=500, volume_points=10, near_points=10)
    arrays = prepare_case(synth_dir / "case_0002.nii.gz", config)
    from sensorium.data.sdf import LabelSdf

    labels, affine = load_label_volume(synth_dir / "case_0002.nii.gz")
    world = denormalise(arrays["surface_points"].astype(np.float64), float(arrays["scale"]), arrays["offset"])
    sdf = LabelSdf(labels, affine, config.values)(world)  # (N, C) world mm
    own = sdf[np.arange(len(world)), arrays["surface_labels"]]
    assert np.abs(own).max() < 1e-3  # float32 storage of the normalised points
    # Stepping outwards along the (outward) normal increases the structure's own SDF.
    step = LabelSdf(labels, affine, config.values)(world + 0.3 * arrays["surface_normals"])
    assert np.mean(step[np.arange(len(world)), arrays["surface_labels"]] > own) > 0.95


def test_normalisation_round_trip():
    rng = np.random.default_rng(0)
    world = rng.normal(size=(100, 3)) * 40 + 7
    scale, offset = 23.5, np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(denormalise(normalise(world, scale, offset), scale, offset), world, atol=1e-12)


def test_normalisation_stored_maps_back_to_world(prepared, synth_dir):
    with np.load(prepared / "case_0000.npz") as d:
        world = denormalise(d["surface_points"].astype(np.float64), float(d["scale"]), d["offset"])
        affine, shape = d["affine"], d["shape"]
    index = np.linalg.solve(affine[:3, :3], (world - affine[:3, 3]).T).T
    assert np.all(index > -1) and np.all(index < shape)  # back inside the volume it came from


def test_voxel_labels_are_the_label_volume_in_its_own_grid(prepared, synth_dir):
    """The stored crop holds every labelled voxel of the volume, as structure index + 1, and
    `voxel_to_normalised` maps each crop voxel to its centre through the affine and normalisation."""
    with np.load(prepared / "case_0002.npz") as d:
        arrays = {k: d[k] for k in d.files}
    volume, affine = load_label_volume(synth_dir / "case_0002.nii.gz")
    crop, origin = arrays["voxel_labels"], arrays["voxel_origin"]
    assert crop.dtype == np.uint8 and origin.dtype == np.int64 and np.all(origin >= 0)
    assert np.all(origin + crop.shape <= volume.shape)
    counts = np.bincount(volume.ravel(), minlength=11)
    np.testing.assert_array_equal(np.bincount(crop.ravel(), minlength=11)[1:], counts[1:])  # no labelled voxel lost
    assert crop.size < volume.size  # background beyond the model's domain is left out
    np.testing.assert_array_equal(crop, volume[tuple(slice(o, o + n) for o, n in zip(origin, crop.shape))])
    index = np.argwhere(crop > 0)  # (N, 3) crop indices of labelled voxels
    matrix = voxel_to_normalised(arrays)
    world = (index + origin) @ affine[:3, :3].T + affine[:3, 3]
    expected = normalise(world, float(arrays["scale"]), arrays["offset"])
    np.testing.assert_allclose(index @ matrix[:3, :3].T + matrix[:3, 3], expected, atol=1e-9)
    assert np.abs(expected).max() < 1.0  # every labelled voxel centre inside the model's domain


def test_split_csv_and_summary(prepared):
    with open(prepared / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["case_0000", "case_0001", "case_0002"]
    assert sorted(r["split"] for r in rows) == ["test", "train", "val"]  # 3 cases: one each
    summary = json.loads((prepared / "prepare.json").read_text())
    assert summary["prepared"] == 3 and summary["skipped"] == 0 and summary["sdf_sign"] == "negative inside"
    assert summary["splits"] == {"train": 1, "val": 1, "test": 1} and summary["test_fraction"] == 0.2


def test_splits_are_keyed_by_case_id():
    ids = [f"case_{i:03d}" for i in range(400)]
    splits = assign_splits(ids, 0.2, seed=0, test_fraction=0.15)
    shares = {name: np.mean([s == name for s in splits.values()]) for name in ("train", "val", "test")}
    assert 0.15 < shares["val"] < 0.25 and 0.1 < shares["test"] < 0.2 and shares["train"] > 0.55
    more = assign_splits(ids + [f"extra_{i}" for i in range(50)], 0.2, seed=0, test_fraction=0.15)
    assert all(more[i] == splits[i] for i in ids)  # adding cases never moves old ones
    assert sorted(assign_splits(["a", "b"], 0.01, seed=0).values()) == ["train", "val"]
    assert sorted(assign_splits(["a", "b", "c"], 0.01, seed=0, test_fraction=0.01).values()) == ["test", "train", "val"]
    assert sorted(assign_splits(["a", "b"], 0.01, seed=0, test_fraction=0.01).values()) == ["test", "train"]


def test_a_given_split_is_kept_and_only_missing_splits_are_drawn():
    ids = [f"c{i}" for i in range(40)]
    given = {cid: "test" if i < 8 else "train" for i, cid in enumerate(ids)}  # a public train / test split
    splits = assign_splits(ids, 0.25, seed=0, test_fraction=0.5, given=given)
    assert all(splits[c] == "test" for c in ids[:8])  # the given test split, no more (test is not drawn)
    assert [c for c in ids if splits[c] == "test"] == ids[:8]
    val = [c for c in ids if splits[c] == "val"]
    assert val and set(val) <= set(ids[8:])  # val drawn from the given train cases
    full = {cid: ("train", "val", "test")[i % 3] for i, cid in enumerate(ids)}
    assert assign_splits(ids, 0.2, seed=0, test_fraction=0.2, given=full) == full


def test_prepare_reads_the_inputs_own_split(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(4):
        _save(raw / f"p{i}.nii.gz", _blocks())
    (raw / "split.csv").write_text("case_id,split\np0,train\np1,train\np2,test\np3,val\n")
    summary = run(raw, tmp_path / "out", TWO, val_fraction=0.4, test_fraction=0.4, progress=False)
    assert read_split_csv(tmp_path / "out" / "split.csv") == {"train": ["p0", "p1"], "test": ["p2"], "val": ["p3"]}
    assert summary["split_source"] == str(raw / "split.csv")
    (raw / "split.csv").write_text("case_id,split\np0,train\np1,holdout\n")
    with pytest.raises(DataError, match="unknown split names"):
        read_given_splits(raw / "split.csv", ["p0", "p1"])
    (raw / "split.csv").write_text("case_id,split\np0,train\np1,test\n")
    with pytest.raises(DataError, match=r"1 prepared case\(s\) are not listed: \['p2'\]"):
        read_given_splits(raw / "split.csv", ["p0", "p1", "p2"])


# --- bad input ------------------------------------------------------------------------------------
TWO = PrepareConfig(structures=("a", "b"), label_values=(1, 2), min_voxels=8, **SMALL)


def _blocks(shape=(16, 16, 16)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[3:8, 3:8, 3:8] = 1
    labels[8:13, 4:9, 4:10] = 2
    return labels


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_good_two_structure_case_prepares(tmp_path):
    arrays = prepare_case(_save(tmp_path / "ok.nii", _blocks()), TWO)  # plain .nii too
    assert arrays["vol_sdf"].shape == (2048, 2)


def test_floating_point_intensities(tmp_path):
    noise = np.random.default_rng(0).normal(0, 0.1, (16, 16, 16))
    data = (_blocks() + noise).astype(np.float32)
    with pytest.raises(DataError, match=r"intens\.nii\.gz.*non-integer values.*intensity image"):
        load_label_volume(_save(tmp_path / "intens.nii.gz", data), TWO)


def test_integer_intensities_are_not_labels(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, size=(16, 16, 16)).astype(np.int16)
    with pytest.raises(DataError, match=r"ct\.nii\.gz.*label values .* neither background"):
        load_label_volume(_save(tmp_path / "ct.nii.gz", data), TWO)


def test_float_labels_with_integer_values_are_accepted(tmp_path):
    labels, _ = load_label_volume(_save(tmp_path / "f.nii.gz", _blocks().astype(np.float32)), TWO)
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1, 2}


def test_missing_structure(tmp_path):
    data = _blocks()
    data[data == 2] = 0
    with pytest.raises(DataError, match=r"missing\.nii\.gz.*missing structures \['b'\]"):
        load_label_volume(_save(tmp_path / "missing.nii.gz", data), TWO)


def test_empty_volume(tmp_path):
    with pytest.raises(DataError, match=r"empty\.nii\.gz.*empty volume"):
        load_label_volume(_save(tmp_path / "empty.nii.gz", np.zeros((16, 16, 16), dtype=np.uint8)), TWO)


def test_corrupt_gzip(tmp_path):
    path = _save(tmp_path / "corrupt.nii.gz", _blocks())
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])  # truncated stream
    with pytest.raises(DataError, match=r"corrupt\.nii\.gz.*cannot read as NIfTI"):
        load_label_volume(path, TWO)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(DataError, match=r"garbage\.nii\.gz.*cannot read as NIfTI"):
        load_label_volume(garbage, TWO)


def test_degenerate_affine(tmp_path):
    image = nib.Nifti1Image(_blocks(), None)
    image.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # a collapsed axis
    path = tmp_path / "flat.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*degenerate"):
        load_label_volume(path, TWO)


def test_mismatched_affine(tmp_path):
    image = nib.Nifti1Image(_blocks(), np.diag([1.5, 1.5, 2.0, 1.0]))
    image.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    image.set_sform(np.diag([1.5, 1.5, 2.0, 1.0]), code=1)
    path = tmp_path / "forms.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(DataError, match=r"forms\.nii\.gz.*sform and qform disagree"):
        load_label_volume(path, TWO)
    image = nib.Nifti1Image(_blocks(), np.diag([1.5, 1.5, 2.0, 1.0]))
    image.header.set_zooms((3.0, 3.0, 3.0))
    path = tmp_path / "pixdim.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(DataError, match=r"pixdim\.nii\.gz.*disagree with the header's pixdim"):
        load_label_volume(path, TWO)


def test_too_few_voxels_for_a_surface(tmp_path):
    data = _blocks()
    data[data == 2] = 0
    data[12, 12, 12] = 2
    with pytest.raises(DataError, match=r"tiny\.nii\.gz.*too few voxels.*'b': 1"):
        load_label_volume(_save(tmp_path / "tiny.nii.gz", data), TWO)


def test_bad_cases_skipped_and_counted_or_raised(tmp_path, caplog):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    _save(raw / "good.nii.gz", _blocks())
    _save(raw / "empty.nii.gz", np.zeros((16, 16, 16), dtype=np.uint8))
    (raw / "broken.nii.gz").write_bytes(b"not a nifti")
    with caplog.at_level(logging.WARNING):
        summary = run(raw, out, TWO, workers=1, on_bad_case="skip", progress=False)
    assert summary["prepared"] == 1 and summary["skipped"] == 2
    assert set(summary["skipped_cases"]) == {"empty.nii.gz", "broken.nii.gz"}
    assert sum("skipping bad sample" in r.message for r in caplog.records) == 2
    assert sorted(p.name for p in out.glob("*.npz")) == ["good.npz"]
    with pytest.raises(DataError, match=r"(broken|empty)\.nii\.gz"):
        run(raw, tmp_path / "out2", TWO, workers=1, on_bad_case="error", progress=False)
