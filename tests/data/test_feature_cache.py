"""Frozen-feature caches: what a store's identity covers (weights, settings, files), reuse and rebuild,
atomic builds, bad samples, reads, and a build shared by two ranks."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # feature_cache_ranks, here and as the launched ranks' script

from feature_cache_ranks import Encoder, Samples
from feature_cache_ranks import ensure as _ensure
from feature_cache_ranks import request as _request

from sensorium.data.feature_cache import StoreWriter, module_digest, open_store, store_identity
from sensorium.errors import DataError


def _expected(samples: Samples, encoder: nn.Module) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.stack([torch.from_numpy(np.load(path)) for path in samples.paths])).numpy()


def test_a_store_holds_each_samples_tokens_chunked_per_sample(tmp_path):
    samples, encoder = Samples(tmp_path / "data"), Encoder()
    store = _ensure(tmp_path / "cache", samples, _request(samples, encoder), dtype="float32")["video"]
    assert store.shape == (7, 3, 2) and store.raw_chunks and store.keys == samples.keys
    expected = _expected(samples, encoder)
    for i in range(7):
        np.testing.assert_allclose(store.read(i), expected[i], rtol=1e-6, atol=1e-7)
    # one chunk per sample: a worker reads one sample's tokens, nothing else
    array = zarr.open_array(str(store.path / "tokens"), mode="r")
    assert array.chunks == (1, 3, 2)
    np.testing.assert_array_equal(np.asarray(array[4]), store.read(4))  # the chunk files are zarr's
    copy = pickle.loads(pickle.dumps(store))  # what a DataLoader worker receives
    np.testing.assert_array_equal(copy.read(6), store.read(6))
    # float16 by default
    half = _ensure(tmp_path / "half", samples, _request(samples, encoder))["video"]
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.read(2), expected[2], rtol=1e-3, atol=1e-3)


def test_module_digest_follows_the_weights_not_where_they_came_from(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          image_size=16, patch_size=8)
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(tmp_path / "a")
    Dinov2Model.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "copy")
    a, copy = (Dinov2Model.from_pretrained(tmp_path / d) for d in ("a", "copy"))
    assert module_digest(a) == module_digest(copy)  # another directory, the same weights
    with torch.no_grad():
        copy.encoder.layer[0].mlp.fc1.weight[0, 0] += 1e-6  # one weight, one ulp-ish away
    assert module_digest(a) != module_digest(copy)
    other = Dinov2Model.from_pretrained(tmp_path / "a", layer_norm_eps=1e-3)  # same weights, other config
    assert module_digest(other) != module_digest(a)
    assert module_digest(Encoder(0)) == module_digest(Encoder(0)) != module_digest(Encoder(1))


def test_stores_are_reused_and_rebuilt_when_the_checkpoint_settings_or_files_change(tmp_path):
    samples, encoder, cache = Samples(tmp_path / "data"), Encoder(), tmp_path / "cache"
    first = _ensure(cache, samples, _request(samples, encoder))["video"]
    assert samples.loads == 7
    again = _ensure(cache, samples, _request(samples, encoder))["video"]
    assert samples.loads == 7 and again.path == first.path and again.fingerprint == first.fingerprint  # reused

    # Other settings (preprocessing, precision, ...) or other weights: a store of their own, beside it.
    settings = _ensure(cache, samples, _request(samples, encoder, size=5))["video"]
    weights = _ensure(cache, samples, _request(samples, Encoder(seed=1)))["video"]
    assert len({first.path, settings.path, weights.path}) == 3 and samples.loads == 21
    np.testing.assert_allclose(weights.read(0), _expected(samples, Encoder(seed=1))[0], atol=1e-3)
    assert open_store(first.path, first.fingerprint).read(0) is not None  # the first one is kept
    assert _ensure(cache, samples, _request(samples, Encoder(seed=1)))["video"].path == weights.path

    # A sample file rewritten (size, mtime): the same store rebuilt in place, never read stale.
    np.save(samples.paths[3], np.ones((3, 4), np.float32))
    os.utime(samples.paths[3], ns=(1, 1))
    rebuilt = _ensure(cache, samples, _request(samples, encoder))["video"]
    assert rebuilt.path == first.path and rebuilt.fingerprint != first.fingerprint and samples.loads == 28
    np.testing.assert_allclose(rebuilt.read(3), _expected(samples, encoder)[3], atol=1e-3)
    with pytest.raises(DataError, match="other weights, settings or files"):
        open_store(first.path, first.fingerprint)
    # A sample more: rebuilt too.
    samples.paths.append(samples.paths[0].with_name("s7.npy"))
    np.save(samples.paths[-1], np.zeros((3, 4), np.float32))
    assert len(_ensure(cache, samples, _request(samples, encoder))["video"]) == 8


def test_a_crash_mid_build_leaves_no_usable_store(tmp_path):
    samples, cache = Samples(tmp_path / "data"), tmp_path / "cache"

    class Dies(Encoder):
        calls = 0

        def forward(self, x):
            Dies.calls += 1
            if Dies.calls == 3:  # the shape probe, the first batch, then the crash
                raise RuntimeError("killed mid-build")
            return super().forward(x)

    with pytest.raises(RuntimeError, match="killed"):
        _ensure(cache, samples, _request(samples, Dies()))
    assert list(cache.iterdir()) == []  # the temporary directory is gone, no store appeared

    # A hard crash (no clean-up): the temporary directory stays, incomplete, under another name.
    request = _request(samples, Encoder())
    key, _, attrs = store_identity(request, "dataset", samples.keys, "float16")
    writer = StoreWriter.create(cache / f"video-{key[:16]}.zarr", (3, 2), "float16", attrs)
    writer.write(0, np.ones((2, 3, 2)))
    with pytest.raises(DataError, match="incomplete feature cache"):
        open_store(writer.tmp)
    # A half store at the store's own place (a copy interrupted): not complete, so rebuilt.
    shutil.copytree(writer.tmp, writer.path)
    with pytest.raises(DataError, match="incomplete"):
        open_store(writer.path)
    samples.loads = 0
    store = _ensure(cache, samples, request)["video"]
    assert store.path == writer.path and samples.loads == 7
    np.testing.assert_allclose(store.read(0), _expected(samples, Encoder())[0], atol=1e-3)
    # a build that never wrote every row refuses to finish
    partial = StoreWriter.create(tmp_path / "p" / "x.zarr", (3, 2), "float16", {**attrs})
    partial.write(0, np.ones((3, 3, 2)))
    with pytest.raises(DataError, match="4 sample\\(s\\) never written"):
        partial.finish({})
    assert not (tmp_path / "p" / "x.zarr").exists() and not partial.tmp.exists()


def test_bad_samples_are_recorded_under_skip_and_stop_the_build_under_error(tmp_path):
    samples = Samples(tmp_path / "data")
    samples.bad = {2}
    with pytest.raises(DataError, match="s2.npy: cannot decode"):
        _ensure(tmp_path / "strict", samples, _request(samples, Encoder()))
    assert list((tmp_path / "strict").iterdir()) == []
    store = _ensure(tmp_path / "cache", samples, _request(samples, Encoder()), on_bad_sample="skip")["video"]
    assert store.bad.keys() == {"s2"} and "cannot decode" in store.problem(2)
    with pytest.raises(DataError, match="was bad when the cache was built"):
        store.read(2)
    assert store.read(3).shape == (3, 2)


def test_tokens_beyond_float16_are_refused_with_the_fix(tmp_path):
    samples = Samples(tmp_path / "data")

    class Loud(Encoder):
        def forward(self, x):
            return super().forward(x) * 1e6

    with pytest.raises(DataError, match="float16's range: set the feature dtype to float32"):
        _ensure(tmp_path / "cache", samples, _request(samples, Loud()))
    assert _ensure(tmp_path / "cache", samples, _request(samples, Loud()), dtype="float32")["video"].read(0).max() > 1e3


def test_a_truncated_chunk_names_the_file_and_the_fix(tmp_path):
    samples = Samples(tmp_path / "data")
    store = _ensure(tmp_path / "cache", samples, _request(samples, Encoder()))["video"]
    chunk = store.path / "tokens" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:4])
    with pytest.raises(DataError, match=r"c/1/0/0: holds 4 bytes, 12 expected \(a truncated cache; delete"):
        store.read(1)
    attrs = json.loads((store.path / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] and attrs["keys"] == samples.keys and attrs["inputs"] == {"size": 4, "dtype": "float16"}


# --- two ranks ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_build_one_store_each_encoding_its_share(tmp_path):
    Samples(tmp_path / "data")  # the files, written before the ranks start
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           str(HERE / "feature_cache_ranks.py"), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["loads"] for r in ranks] == [4, 3]  # contiguous shares of the 7 samples, each loaded once
    assert ranks[0]["path"] == ranks[1]["path"] and ranks[0]["row"] == ranks[1]["row"]
    samples = Samples(tmp_path / "data")
    single = _ensure(tmp_path / "single", samples, _request(samples, Encoder()), dtype="float32")["video"]
    built = open_store(ranks[0]["path"])
    assert built.fingerprint == single.fingerprint  # the same store a single process builds
    for i in range(7):
        np.testing.assert_allclose(built.read(i), single.read(i), rtol=1e-6, atol=1e-7)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [built.path.name]  # no temporary left
