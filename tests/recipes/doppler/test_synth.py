"""The walking-radar simulation: the Doppler of a point scatterer, the ellipsoid RCS, the PRF
check, the ID_k layout with users.csv, determinism, and gait parameters measured back."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sensorium.errors import ConfigError
from sensorium.recipes.doppler.physics import gait_from_spectrograms, per_user_median
from sensorium.recipes.doppler.synth import (
    RadarConfig,
    doppler_axis,
    ellipsoid_rcs,
    generate,
    read_users_csv,
    scatterer_returns,
    spectrogram_db,
)


@pytest.mark.parametrize("speed", [1.3, 4.5, -2.0])
def test_a_point_scatterer_at_known_velocity_shows_at_2v_over_lambda(speed):
    """A sphere approaching the radar at `speed` m/s: every frame's strongest Doppler row holds
    f = 2 v / lambda (24 GHz: 1.3 m/s -> 208 Hz, 4.5 m/s -> 720 Hz; receding -2 m/s -> -320 Hz)."""
    radar = RadarConfig(band_hz=(-1000.0, 1000.0), bins=128)
    t = np.arange(int(radar.duration_s * radar.prf_hz)) / radar.prf_hz
    position = np.zeros((1, len(t), 1, 3))
    position[0, :, 0, 0] = 20.0 - speed * t  # along x towards the radar at the origin
    axes = np.zeros_like(position)
    axes[..., 2] = 1.0
    signal = scatterer_returns(position, axes, np.full((1, 1, 1), 0.1), np.full((1, 1, 1), 0.1), np.zeros(3),
                               radar.wavelength)
    db = spectrogram_db(signal, radar)[0]  # (bins, frames)
    measured = doppler_axis(radar)[db.argmax(axis=0)]
    expected = 2 * speed / radar.wavelength
    bin_width = 2000.0 / 128
    assert np.all(np.abs(measured - expected) <= bin_width / 2 + 1e-6)


def test_a_prf_below_twice_the_feet_doppler_is_refused():
    with pytest.raises(ConfigError, match="aliases"):
        generate("/nonexistent", users=1, per_user=1,
                 radar=RadarConfig(prf_hz=1200.0, band_hz=(-500.0, 500.0)))


def test_ellipsoid_rcs_of_a_sphere_is_its_cross_section_from_every_side():
    a = np.full(3, 0.2)
    np.testing.assert_allclose(ellipsoid_rcs(a, a, np.array([0.0, 0.5, 1.0])), np.pi * 0.04)
    long = ellipsoid_rcs(np.array(0.05), np.array(0.4), np.array([0.0, 1.0]))
    assert long[0] > long[1]  # a limb seen broadside returns more than seen end-on


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("doppler_synth")
    generate(root, users=3, per_user=4, seed=5)
    return root


def test_the_layout_users_csv_and_determinism(synthetic, tmp_path):
    assert sorted(p.name for p in synthetic.glob("ID_*")) == ["ID_1", "ID_2", "ID_3"]
    image = Image.open(synthetic / "ID_2" / "rec_0003.png")
    assert image.mode == "L" and image.size == (64, 64)
    users = read_users_csv(synthetic / "users.csv")
    assert set(users) == {1, 2, 3}
    assert all(1.5 < u["height_m"] < 2.0 and u["cycle_hz"] > 0 for u in users.values())
    info = json.loads((synthetic / "synth.json").read_text())
    assert info["radar"]["prf_hz"] >= 1600 and len(info["doppler_axis_hz"]) == 64
    generate(tmp_path, users=3, per_user=4, seed=5)
    for path in synthetic.glob("ID_*/*.png"):
        assert (tmp_path / path.relative_to(synthetic)).read_bytes() == path.read_bytes()
    generate(tmp_path / "other", users=1, per_user=1, seed=6)
    other = (tmp_path / "other" / "ID_1" / "rec_0000.png").read_bytes()
    assert other != (synthetic / "ID_1" / "rec_0000.png").read_bytes()


def test_gait_measured_from_spectrograms_matches_each_users_truth(synthetic):
    """The torso Doppler and the gait cycle read off the images agree with users.csv: within a
    Doppler row or two and a few percent of the cycle frequency."""
    info = json.loads((synthetic / "synth.json").read_text())
    radar = info["radar"]
    pixels, labels = [], []
    for user in (1, 2, 3):
        for path in sorted((synthetic / f"ID_{user}").glob("*.png")):
            pixels.append(np.array(Image.open(path)))
            labels.append(user - 1)
    samples = radar["duration_s"] * radar["prf_hz"]
    frame_s = (samples - radar["window"]) / (radar["frames"] - 1) / radar["prf_hz"]
    torso, cycle = gait_from_spectrograms(torch.from_numpy(np.stack(pixels))[:, None],
                                          np.asarray(info["doppler_axis_hz"]), frame_s)
    users = read_users_csv(synthetic / "users.csv")
    labels = np.array(labels)
    for u, (t, c) in enumerate(zip(per_user_median(torso, labels, 3), per_user_median(cycle, labels, 3))):
        assert abs(t - users[u + 1]["torso_doppler_hz"]) < 2.5 * 1250 / 64
        assert abs(c - users[u + 1]["cycle_hz"]) < 0.05 * users[u + 1]["cycle_hz"]
