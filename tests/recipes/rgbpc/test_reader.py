"""Bad input: each case gives one DataError naming the file and the problem (or, with
on_bad_sample: skip, a logged and counted skip); the datamodule's samples map uv onto each grid."""

import numpy as np
import pytest
import torch
import zarr

from sensorium.data.bad_samples import collate_skipping
from sensorium.errors import DataError
from sensorium.recipes.rgbpc.datamodule import RgbpcDataModule
from sensorium.recipes.rgbpc.reader import Item, RgbpcSamples

EPISODE = ("reach_box", "episode_001")


def _module(root, **kwargs) -> RgbpcDataModule:
    dm = RgbpcDataModule(str(root), points=16, batch_size=4, eval_windows=4, eval_points=8, action_points=16,
                         action_train_episodes=3, **kwargs)
    dm.setup("fit")
    return dm


def _read_step(dm: RgbpcDataModule, step: int):
    """The sample of EPISODE's step `step` (anchor only)."""
    e = next(i for i, ep in enumerate(dm.episodes) if (ep.task, ep.name) == EPISODE)
    return RgbpcSamples(dm.episodes, [Item(e, step, 1, 0, False)], dm.encoders, 16, seed=0,
                        on_bad_sample=dm.on_bad_sample)[0]


def _pc(root, step=3):
    return root / "pc" / EPISODE[0] / EPISODE[1] / f"step_{step:04d}"


def test_a_sample_holds_each_encoders_grid_positions(tiny_data):
    dm = _module(tiny_data)
    sample = _read_step(dm, 5)
    episode = next(ep for ep in dm.episodes if (ep.task, ep.name) == EPISODE)
    for encoder in ("shape8", "vit16"):
        transform = episode.packs[encoder].transform
        np.testing.assert_allclose(sample[f"grid/{encoder}"].numpy(), transform.to_grid(sample["uv"].numpy()), atol=1e-5)
        assert sample[f"feat/{encoder}"].shape == (1, *transform.grid, episode.packs[encoder].channels)
    assert sample["feat/shape8"].dtype == torch.float16 and sample["pc_feat"].shape == (16, 32)
    assert torch.isfinite(sample["depth"]).all() and sample["action"].shape == (3,)
    assert float(sample["patch_px"]) == pytest.approx(12.0)  # vit16: 16 px cells of a 4/3 resize
    assert sum(len(v) for v in dm.splits.values()) == 12 and len(dm.splits["test"]) == 3


def test_the_action_probe_takes_episodes_evenly_over_tasks_or_every_one(tiny_data):
    dm = _module(tiny_data)
    chosen = dm.action_train_members()
    assert len(chosen) == 3 and set(chosen) <= set(dm.splits["train"])
    assert len({dm.episodes[e].task for e in chosen}) == 3  # one per task before a second of any
    dm.action_train_episodes = None
    assert dm.action_train_members() == sorted(dm.splits["train"])


def test_missing_camera_json(data_copy):
    camera = data_copy / "rgb" / EPISODE[0] / EPISODE[1] / "camera.json"
    camera.unlink()
    with pytest.raises(DataError, match="missing camera.json") as e:
        _module(data_copy)
    assert e.value.path == str(camera)


def test_actions_csv_shorter_than_the_episode(data_copy):
    path = data_copy / "actions" / EPISODE[0] / f"{EPISODE[1]}.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match=r"9 action rows, shorter than the episode.s 10 steps \(no action for step 9\)") as e:
        _module(data_copy)
    assert e.value.path == str(path)


def test_an_episode_lacking_an_encoders_pack(data_copy):
    import shutil

    pack = data_copy / "features" / "vit16" / EPISODE[0] / f"{EPISODE[1]}.zarr"
    shutil.rmtree(pack)
    with pytest.raises(DataError, match=f"episode {EPISODE[0]}/{EPISODE[1]} lacks the pack of encoder 'vit16'") as e:
        _module(data_copy)
    assert e.value.path == str(pack)


def test_packs_whose_frame_paths_disagree(data_copy):
    pack = data_copy / "features" / "vit16" / EPISODE[0] / f"{EPISODE[1]}.zarr"
    group = zarr.open_group(str(pack), mode="r+")
    paths = list(group.attrs["frame_paths"])
    paths[2], paths[3] = paths[3], paths[2]
    group.attrs["frame_paths"] = paths
    with pytest.raises(DataError, match="frame paths disagree with shape8's pack at frame 2") as e:
        _module(data_copy)
    assert e.value.path == str(pack)


def test_wrong_pack_dtype_and_point_shapes(data_copy):
    pack = data_copy / "features" / "shape8" / EPISODE[0] / f"{EPISODE[1]}.zarr"
    group = zarr.open_group(str(pack), mode="r+")
    shape = group["features"].shape
    group.create_array("features", shape=shape, dtype="int16", overwrite=True)
    with pytest.raises(DataError, match="features are int16") as e:
        _module(data_copy)
    assert e.value.path == str(pack)


def test_point_files_wrong_shape_without_uv_uv_outside_and_malformed_ply(data_copy):
    dm = _module(data_copy)
    sidecar = _pc(data_copy).with_suffix(".npz")
    original = dict(np.load(sidecar))
    np.savez(sidecar, uv=original["uv"][:, :1], pc_feat=original["pc_feat"])
    with pytest.raises(DataError, match=r"uv has shape \[\d+, 1\]") as e:
        _read_step(dm, 3)
    assert e.value.path == str(sidecar)
    np.savez(sidecar, pc_feat=original["pc_feat"])
    with pytest.raises(DataError, match="point file without uv"):
        _read_step(dm, 3)
    uv = original["uv"].copy()
    uv[5] = [60.0, 10.0]  # the frame is 48 wide
    np.savez(sidecar, uv=uv, pc_feat=original["pc_feat"])
    with pytest.raises(DataError, match=r"1 uv outside the 48x32 image \(e.g. \[60.0, 10.0\]"):
        _read_step(dm, 3)
    np.savez(sidecar, uv=np.full(original["uv"].shape, "left"), pc_feat=original["pc_feat"])  # text, not numbers
    with pytest.raises(DataError, match="cannot read point file \\(ValueError"):
        _read_step(dm, 3)
    sidecar.write_bytes(sidecar.read_bytes()[:-100])  # cut short
    with pytest.raises(DataError, match="cannot read point file \\(BadZipFile"):
        _read_step(dm, 3)
    np.savez(sidecar, **original)
    ply = _pc(data_copy, 4).with_suffix(".ply")
    ply.write_bytes(ply.read_bytes()[:200])
    with pytest.raises(DataError, match="malformed PLY") as e:
        _read_step(dm, 4)
    assert e.value.path == str(ply)


def test_nan_features_error_or_skip_counted(data_copy, caplog):
    pack = data_copy / "features" / "shape8" / EPISODE[0] / f"{EPISODE[1]}.zarr"
    features = zarr.open_array(str(pack / "features"), mode="r+")
    features[6] = np.nan
    dm = _module(data_copy)
    with pytest.raises(DataError, match="NaN or infinite features in frames 6..6") as e:
        _read_step(dm, 6)
    assert e.value.path == str(pack)
    skipping = _module(data_copy, on_bad_sample="skip")
    assert _read_step(skipping, 6) is None and "skipping bad sample" in caplog.text
    batch = collate_skipping([_read_step(skipping, 6), _read_step(skipping, 5)])
    assert int(batch["skipped"]) == 1 and batch["pc_feat"].shape[0] == 1


def test_bad_episodes_are_skipped_and_counted(data_copy, caplog):
    (data_copy / "rgb" / EPISODE[0] / EPISODE[1] / "camera.json").unlink()
    dm = _module(data_copy, on_bad_sample="skip")
    assert len(dm.episodes) == 11 and "skipped 1 bad episode(s)" in caplog.text
