"""Feature packs: the writer's round trip, atomic writes, lazy window reads, and layout checks."""

import pickle
import shutil

import numpy as np
import pytest
import zarr

from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import PackWriter, open_pack, window_index, write_pack
from sensorium.errors import DataError

TRANSFORM = GridTransform((32, 48), (32, 48), (0, 0, 32, 48), 8)  # a 4 x 6 grid
PATHS = [f"task/ep/step_{i:04d}.png" for i in range(10)]


def _features(frames: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(frames, 4, 6, 5)).astype(np.float32)


def test_round_trip_and_windows(tmp_path):
    features = _features()
    path = write_pack(tmp_path / "ep.zarr", features, PATHS, TRANSFORM, encoder="conv8", window=4, window_stride=3,
                      extra={"seed": 7})
    pack = open_pack(path)
    assert pack.frame_paths == PATHS and pack.transform == TRANSFORM and pack.encoder == "conv8"
    assert pack.shape == (10, 4, 6, 5) and pack.dtype == np.float16 and pack.extra == {"seed": 7}
    np.testing.assert_array_equal(pack.windows, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    np.testing.assert_array_equal(pack.frames(0, 10), features.astype(np.float16))  # float16 on disk
    np.testing.assert_array_equal(pack.window(1), features[3:7].astype(np.float16))
    # chunked by frame: one chunk file per frame, so a window reads only its own frames
    assert zarr.open_array(str(path / "features"), mode="r").chunks == (1, 4, 6, 5)
    # the handle is opened lazily and never pickled (DataLoader workers open their own)
    assert pack._features is None  # an uncompressed pack's frames are read from its chunk files
    assert pack.features is not None and pack._features is not None  # zarr's handle opens on first use
    copy = pickle.loads(pickle.dumps(pack))
    assert copy._features is None
    np.testing.assert_array_equal(copy.window(2), pack.window(2))


def test_window_index():
    np.testing.assert_array_equal(window_index(5, 2, 2), [[0, 1], [2, 3]])
    assert window_index(3, 4, 1).shape == (0, 4)


def test_the_writer_is_atomic(tmp_path):
    path = tmp_path / "ep.zarr"
    with pytest.raises(RuntimeError):
        with PackWriter(path, PATHS, TRANSFORM, channels=5, encoder="e") as pack:
            pack.write(0, _features(4))
            raise RuntimeError("killed mid-pack")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    writer = PackWriter(path, PATHS, TRANSFORM, channels=5, encoder="e")
    writer.write(0, _features(6))
    with pytest.raises(DataError, match="4 frame\\(s\\) never written"):
        writer.close()
    assert not path.exists() and list(tmp_path.iterdir()) == []
    # an old pack is replaced only once the new one is complete
    write_pack(path, _features(seed=1), PATHS, TRANSFORM, encoder="e")
    write_pack(path, _features(seed=2), PATHS, TRANSFORM, encoder="e")
    np.testing.assert_array_equal(open_pack(path).frames(0, 10), _features(seed=2).astype(np.float16))
    assert [p.name for p in tmp_path.iterdir()] == ["ep.zarr"]


def test_bad_packs_name_the_pack_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="non-finite"):
        PackWriter(tmp_path / "nan.zarr", PATHS, TRANSFORM, 5, "e").write(0, np.full((1, 4, 6, 5), np.nan))
    path = write_pack(tmp_path / "ep.zarr", _features(), PATHS, TRANSFORM, encoder="e")
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["frame_paths"] = PATHS[:-1]
    with pytest.raises(DataError, match=r"ep.zarr: 9 frame paths for 10 frames"):
        open_pack(path)
    group.attrs["frame_paths"] = PATHS
    group.attrs["complete"] = False
    with pytest.raises(DataError, match="incomplete pack"):
        open_pack(path)
    group.attrs["complete"] = True
    group.create_array("features", shape=(10, 4, 6, 5), dtype="int32", overwrite=True)
    with pytest.raises(DataError, match="features are int32"):
        open_pack(path)
    group.create_array("features", shape=(10, 24, 5), dtype="float16", overwrite=True)
    with pytest.raises(DataError, match=r"must be \[F, Hf, Wf, C\]"):
        open_pack(path)
    with pytest.raises(DataError, match="no such feature pack"):
        open_pack(tmp_path / "missing.zarr")


def test_uncompressed_frames_are_read_from_their_chunk_files_as_zarr_reads_them(tmp_path):
    features = _features()
    features[3] = 0.0  # the fill value: in zarr a frame without a chunk file reads as it
    raw = open_pack(write_pack(tmp_path / "raw.zarr", features, PATHS, TRANSFORM, encoder="e"))
    packed = open_pack(write_pack(tmp_path / "lz4.zarr", features, PATHS, TRANSFORM, encoder="e", compression="lz4"))
    assert raw.raw_chunks and not packed.raw_chunks  # a compressed pack goes through zarr
    shutil.rmtree(raw.path / "features" / "c" / "3", ignore_errors=True)  # (zarr itself skips writing it)
    through_zarr = np.asarray(zarr.open_array(str(raw.path / "features"), mode="r")[...])
    for start, stop in [(0, 10), (2, 6), (3, 4), (9, 10)]:
        np.testing.assert_array_equal(raw.frames(start, stop), through_zarr[start:stop])
        np.testing.assert_array_equal(packed.frames(start, stop), through_zarr[start:stop])
    assert raw.frames(0, 2).dtype == np.float16
    chunk = raw.path / "features" / "c" / "5" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"c/5/0/0/0: frame 5 holds 238 bytes, 240 expected"):
        raw.frames(4, 8)
