"""The synthetic cardiac generator: real NIfTI layout, anatomy-like arrangement, anisotropy, determinism."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sensorium.recipes.cardiac.reader import CARDIAC_STRUCTURES, read_label_map
from sensorium.recipes.cardiac.synth import generate, main

SHAPE, SPACING = (48, 48, 32), (2.6, 2.6, 4.0)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cardiac_synth")
    generate(out, seed=3, cases=2, shape=SHAPE, spacing=SPACING)
    return out


def _labels(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def _contacts(labels: np.ndarray) -> np.ndarray:
    """(11, 11) counts of face-adjacent voxel pairs with labels (a, b)."""
    counts = np.zeros((11, 11), dtype=np.int64)
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        x, y = a[:-1].ravel().astype(np.int64), a[1:].ravel().astype(np.int64)
        np.add.at(counts, (x, y), 1)
    return counts + counts.T


def test_layout_and_label_map(synth_dir):
    names = sorted(p.name for p in synth_dir.iterdir())
    assert names == ["case_0000.nii.gz", "case_0001.nii.gz", "labels.json"]
    names, values = read_label_map(synth_dir / "labels.json")
    assert names == CARDIAC_STRUCTURES and values == tuple(range(1, 11))
    assert json.loads((synth_dir / "labels.json").read_text())["background"] == 0


def test_volumes_hold_every_structure_with_anisotropic_spacing(synth_dir):
    image = nib.load(str(synth_dir / "case_0000.nii.gz"))
    labels = np.asanyarray(image.dataobj)
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    np.testing.assert_allclose(image.header.get_zooms(), SPACING)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), SPACING)
    # Voxel x and y run towards world -x and -y (an LPS-acquired scan stored in RAS).
    assert image.affine[0, 0] < 0 and image.affine[1, 1] < 0 < image.affine[2, 2]
    counts = np.bincount(labels.ravel(), minlength=11)
    assert counts.size == 11 and np.all(counts[1:] > 100), counts


def test_structures_touch_and_nest_like_a_heart(synth_dir):
    idx = {name: i + 1 for i, name in enumerate(CARDIAC_STRUCTURES)}
    for path in sorted(synth_dir.glob("*.nii.gz")):
        contacts = _contacts(_labels(path))
        lv, myo = idx["left_ventricle"], idx["lv_myocardium"]
        # The myocardium wraps the LV blood pool: open only at the valve plane.
        lv_boundary = contacts[lv].sum() - contacts[lv, lv]
        assert contacts[lv, myo] > 0.7 * lv_boundary
        assert contacts[lv, 0] < 0.15 * lv_boundary
        touching = [("right_ventricle", "lv_myocardium"), ("right_atrium", "right_ventricle"),
                    ("aorta", "left_ventricle"), ("pulmonary_artery", "right_ventricle"),
                    ("superior_vena_cava", "right_atrium"), ("inferior_vena_cava", "right_atrium"),
                    ("pulmonary_veins", "left_atrium")]
        for a, b in touching:
            assert contacts[idx[a], idx[b]] > 0, f"{a} does not touch {b} in {path.name}"
        assert contacts[idx["left_atrium"], lv] + contacts[idx["left_atrium"], myo] > 0


def test_deterministic_per_seed_and_varied_per_case(tmp_path, synth_dir):
    generate(tmp_path, seed=3, cases=1, shape=SHAPE, spacing=SPACING)
    again = _labels(tmp_path / "case_0000.nii.gz")
    np.testing.assert_array_equal(again, _labels(synth_dir / "case_0000.nii.gz"))
    a, b = _labels(synth_dir / "case_0000.nii.gz"), _labels(synth_dir / "case_0001.nii.gz")
    assert (a != b).mean() > 0.01  # pose, size and shape differ between cases
    generate(tmp_path / "other", seed=4, cases=1, shape=SHAPE, spacing=SPACING)
    assert (_labels(tmp_path / "other" / "case_0000.nii.gz") != a).any()


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--seed", "1", "--cases", "1", "--shape", "32", "32", "24",
                 "--spacing", "4", "4", "5"]) == 0
    assert (tmp_path / "case_0000.nii.gz").exists()
    assert "wrote 1 cardiac label volumes" in capsys.readouterr().out


def test_mild_preset_varies_less_but_still_varies(tmp_path):
    """The demo's `mild` preset halves every amount: its cases differ less from each other than the
    default preset's, but still in size, pose and shape; workers do not change any case."""
    from sensorium.recipes.cardiac.synth import VARIATIONS

    assert all(getattr(VARIATIONS["mild"], f) < getattr(VARIATIONS["default"], f)
               for f in ("scale", "radius", "rotation_deg", "shift_mm", "deform_mm"))

    def spread(variation, workers=1):
        out = tmp_path / f"{variation}_{workers}"
        generate(out, seed=5, cases=4, shape=SHAPE, spacing=SPACING, variation=variation, workers=workers)
        volumes = [_labels(out / f"case_{i:04d}.nii.gz") for i in range(4)]
        return volumes, np.mean([(a != b).mean() for i, a in enumerate(volumes) for b in volumes[i + 1:]])

    mild, mild_spread = spread("mild")
    _, default_spread = spread("default")
    assert 0.005 < mild_spread < default_spread
    parallel, _ = spread("mild", workers=2)
    for a, b in zip(mild, parallel):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown variation"):
        generate(tmp_path / "bad", cases=1, shape=SHAPE, variation="wild")
