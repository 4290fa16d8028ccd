"""read_npz: the arrays np.load gives, for stored and compressed files, and np.load's errors for bad ones."""

import io
import zipfile

import numpy as np
import pytest

from sensorium.data.npz import read_npz


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "uv": rng.normal(size=(1022, 2)).astype(np.float32),
        "pc_feat": rng.normal(size=(1022, 32)).astype(np.float16),
        "fortran": np.asfortranarray(rng.integers(0, 100, size=(3, 5)).astype(">i8")),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), dtype=np.uint8),
        "records": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_read_npz_gives_what_np_load_gives(tmp_path, save):
    path = tmp_path / "arrays.npz"
    save(path, **_arrays())
    arrays = read_npz(path)
    with np.load(path) as expected:
        assert sorted(arrays) == sorted(expected.files)
        for name in expected.files:
            assert arrays[name].dtype == expected[name].dtype and arrays[name].shape == expected[name].shape, name
            np.testing.assert_array_equal(arrays[name], expected[name])
    if save is np.savez:  # stored members are views of the file's bytes: not writable
        assert not arrays["uv"].flags.writeable


def test_bad_files_raise_np_loads_errors(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, **_arrays())
    (tmp_path / "truncated.npz").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(zipfile.BadZipFile):
        read_npz(tmp_path / "truncated.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(zipfile.BadZipFile):
        read_npz(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:  # a .npy header promising more data than it holds
        archive.writestr("uv.npy", _npy_bytes(np.zeros((4, 2)))[:-8])
    with pytest.raises(ValueError, match="uv.npy: 56 bytes of data, shape \\(4, 2\\) of float64 needs 64"):
        read_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        read_npz(tmp_path / "objects.npz")
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
