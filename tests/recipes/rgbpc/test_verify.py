"""`sensorium verify rgbpc`: a clean dataset passes; each kind of damage is reported, naming the file."""

import shutil

import numpy as np
import pytest
import zarr

from sensorium.recipes.rgbpc.verify import main, verify

TASK, NAME = "reach_sphere", "episode_002"


def _pack(root, encoder="shape8"):
    return root / "features" / encoder / TASK / f"{NAME}.zarr"


def _only_problem(root, *fragments, **kwargs):
    report = verify(root, sample_frames=3, **kwargs)
    assert not report["ok"]
    matching = [p for p in report["problems"] if all(f in p for f in fragments)]
    assert matching, report["problems"]
    return matching


def test_a_clean_dataset_passes(tiny_data, capsys):
    report = verify(tiny_data, sample_frames=3)
    assert report["ok"], report["problems"]
    assert report["episodes"] == 12 and report["packs"] == 24 and report["encoders"] == ["shape8", "vit16"]
    for encoder in ("shape8", "vit16"):  # a smoothly moving camera: neighbours are the most alike
        assert report["similarity"][encoder]["adjacent"] > report["similarity"][encoder]["distant"] + 0.1
    assert main([str(tiny_data), "--report", str(tiny_data.parent / "verify.json")]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_frame_paths_that_disagree(data_copy):
    group = zarr.open_group(str(_pack(data_copy, "vit16")), mode="r+")
    paths = list(group.attrs["frame_paths"])
    group.attrs["frame_paths"] = paths[1:] + paths[:1]
    _only_problem(data_copy, str(_pack(data_copy, "vit16")), "frame paths disagree", "frame 0")


def test_wrong_dtype_and_a_missing_pack(data_copy):
    group = zarr.open_group(str(_pack(data_copy)), mode="r+")
    group.create_array("features", shape=group["features"].shape, dtype="uint8", overwrite=True)
    shutil.rmtree(_pack(data_copy, "vit16"))
    _only_problem(data_copy, str(_pack(data_copy)), "features are uint8")
    _only_problem(data_copy, str(_pack(data_copy, "vit16")), "lacks the pack of encoder 'vit16'")


def test_nan_features(data_copy):
    zarr.open_array(str(_pack(data_copy) / "features"), mode="r+")[4, 0, 0, :3] = np.nan
    _only_problem(data_copy, str(_pack(data_copy)), "3 NaN or infinite")


@pytest.mark.parametrize("damage", ["identical", "shuffled"])
def test_identical_or_shuffled_frames(data_copy, damage):
    features = zarr.open_array(str(_pack(data_copy, "vit16") / "features"), mode="r+")
    values = features[...]
    if damage == "identical":
        values[5] = values[4]
        features[...] = values
        _only_problem(data_copy, str(_pack(data_copy, "vit16")), "frames 4 and 5 have identical features")
    else:
        features[...] = values[np.random.default_rng(0).permutation(len(values))]
        _only_problem(data_copy, str(_pack(data_copy, "vit16")), "frames shuffled?")


def test_uv_that_do_not_index_the_frame(data_copy):
    for sidecar in (data_copy / "pc" / TASK / NAME).glob("*.npz"):
        arrays = dict(np.load(sidecar))
        np.savez(sidecar, uv=(arrays["uv"] + 0.5) * 0.5 - 0.5, pc_feat=arrays["pc_feat"])  # a half-size image's uv
    _only_problem(data_copy, str(data_copy / "pc" / TASK / NAME), "point colours differ from the frame's pixels")


def test_a_transform_made_for_other_frames(data_copy):
    group = zarr.open_group(str(_pack(data_copy)), mode="r+")
    transform = dict(group.attrs["transform"])
    transform["image_size"], transform["resize"] = [64, 96], [64, 96]
    transform["crop"], transform["stride"] = [0, 0, 64, 96], 16
    group.attrs["transform"] = transform
    _only_problem(data_copy, str(_pack(data_copy)), "transform made for [64, 96] images")
    assert main([str(data_copy)]) == 1
