"""The cardiac reader's Dataset names the case file a problem comes from."""

import numpy as np
import pytest

from sensorium.errors import DataError
from sensorium.recipes.cardiac.reader import CardiacCases, CardiacSampling


def _case(path, points: int, classes: int = 2):
    rng = np.random.default_rng(0)
    np.savez(path, surface_points=rng.random((points, 3), dtype=np.float32),
             surface_labels=np.zeros(points, np.int64), vol_points=rng.random((points, 3), dtype=np.float32),
             vol_sdf=rng.random((points, classes), dtype=np.float32),
             near_points=rng.random((points, 3), dtype=np.float32),
             near_sdf=rng.random((points, classes), dtype=np.float32), near_labels=np.zeros(points, np.int64))
    return path


def test_a_case_with_too_few_points_is_named_in_the_error(tmp_path):
    paths = [_case(tmp_path / "big.npz", 64), _case(tmp_path / "small.npz", 8)]
    cases = CardiacCases(paths, CardiacSampling(surface_points=16, volume_points=16, near_points=16))
    assert cases[0]["surface_points"].shape == (16, 3)
    with pytest.raises(DataError, match=r"small\.npz: asks for 16 surface points per sample but the case stores 8"):
        cases[1]
