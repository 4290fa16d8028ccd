"""`sensorium prepare rgbpc`: the design note's .pt layout -> the rgbpc layout and zarr packs (loaded
with weights_only=True; overlapping windows stored once; meta + flags give the exact transform)."""

import shutil

import numpy as np
import pytest
import torch

from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import open_pack
from sensorium.errors import DataError
from sensorium.recipes.rgbpc.datamodule import RgbpcDataModule
from sensorium.recipes.rgbpc.prepare import main
from sensorium.recipes.rgbpc.reader import read_ply

TASK, EPISODES, STEPS = "reach_box", ("episode_000", "episode_001"), 10


def _note_layout(tiny_data, root, point_keys=("pc", "uv", "pc_feat")):
    """The note's layout built from the tiny dataset; returns each encoder's true per-frame features."""
    g = torch.Generator().manual_seed(0)
    truth = {}
    for name in EPISODES:
        frames = root / "rgb_dataset" / "RGB" / TASK / name
        frames.mkdir(parents=True)
        for i in range(STEPS):  # the note's frames: digits, not step_XXXX
            shutil.copyfile(tiny_data / "rgb" / TASK / name / f"step_{i:04d}.png", frames / f"{i:06d}.png")
        paths = [f"rgb_dataset/RGB/{TASK}/{name}/{i:06d}.png" for i in range(STEPS)]
        windows = [list(range(s, s + 4)) for s in range(0, STEPS - 3, 2)]  # T = 4, stride 2: overlapping
        for encoder, grid, meta in (("dino", (4, 4), {"image_size": [32, 48], "resize": [64, 96], "center_crop": [64, 64],
                                                      "patch_size": 16}),
                                    ("vggt", (4, 6), {"orig_size": [32, 48]})):
            per_frame = torch.randn(STEPS, *grid, 8, generator=g)
            truth[(name, encoder)] = per_frame
            pack = {"per_frame_features": per_frame[torch.tensor(windows)],  # (W, T, Hf, Wf, C)
                    "frame_paths": [[paths[f] for f in w] for w in windows], "meta": meta}
            target = root / "rgb_dataset" / f"features_{encoder}_unified" / TASK / f"{name}.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(pack, target)
        points = root / "pc_dataset" / "PC" / "ULIP_FEAT_PT_POINT" / TASK / name
        points.mkdir(parents=True)
        for i in range(STEPS):
            xyz, rgb = read_ply(tiny_data / "pc" / TASK / name / f"step_{i:04d}.ply")
            side = np.load(tiny_data / "pc" / TASK / name / f"step_{i:04d}.npz")
            content = {"pc": torch.from_numpy(np.concatenate([xyz, rgb / 255.0], 1)), "uv": torch.from_numpy(side["uv"]),
                       "pc_feat": torch.from_numpy(side["pc_feat"])}
            torch.save({k: v for k, v in content.items() if k in point_keys}, points / f"{i:06d}.ply.ulip_v2.pt")
    return truth


ARGS = ["--intrinsics", "50", "50", "23.5", "15.5"]


def test_the_note_layout_converts_to_packs_and_point_files(tiny_data, tmp_path):
    truth = _note_layout(tiny_data, tmp_path / "note")
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "note"), "--out", str(out), *ARGS, "--actions", str(tiny_data / "actions"),
                 "--encoder", "dino=features_dino_unified", "--encoder", "vggt=features_vggt_unified"]) == 0
    name = EPISODES[1]
    assert sorted(p.name for p in (out / "rgb" / TASK / name).glob("*.png"))[:2] == ["step_0000.png", "step_0001.png"]
    dino = open_pack(out / "features" / "dino" / TASK / f"{name}.zarr")
    # every frame once, in order, although the .pt held overlapping windows
    np.testing.assert_allclose(dino.frames(0, STEPS).astype(np.float32), truth[(name, "dino")].numpy(), atol=1e-2)
    assert dino.transform == GridTransform((32, 48), (64, 96), (0, 16, 64, 64), 16)
    np.testing.assert_array_equal(dino.windows[:2], [[0, 1, 2, 3], [2, 3, 4, 5]])  # T and stride of the .pt
    vggt = open_pack(out / "features" / "vggt" / TASK / f"{name}.zarr")
    assert vggt.transform == GridTransform.identity((32, 48), 8)  # stride inferred: 32 / 4 = 48 / 6
    side = np.load(out / "pc" / TASK / name / "step_0007.npz")
    original = np.load(tiny_data / "pc" / TASK / name / "step_0007.npz")
    np.testing.assert_array_equal(side["uv"], original["uv"])
    np.testing.assert_array_equal(side["pc_feat"], original["pc_feat"])
    xyz, rgb = read_ply(out / "pc" / TASK / name / "step_0007.ply")
    xyz0, rgb0 = read_ply(tiny_data / "pc" / TASK / name / "step_0007.ply")
    np.testing.assert_allclose(xyz, xyz0, atol=1e-6)
    np.testing.assert_array_equal(rgb, rgb0)  # colours in [0, 1] scaled back to 0-255
    # the converted data trains: the datamodule reads it
    dm = RgbpcDataModule(str(out), encoders=["dino", "vggt"], points=8, batch_size=2, test_fraction=0.0,
                         val_fraction=0.0)
    dm.setup("predict")
    assert len(dm.episodes) == 2 and dm.channels() == {"dino": 8, "vggt": 8}


def test_bad_note_files_name_the_file(tiny_data, tmp_path):
    _note_layout(tiny_data, tmp_path / "note", point_keys=("pc", "pc_feat"))
    with pytest.raises(DataError, match="point file without uv") as e:
        main(["--input", str(tmp_path / "note"), "--out", str(tmp_path / "out"), *ARGS])
    assert e.value.path.endswith("000000.ply.ulip_v2.pt")
    pt = tmp_path / "note" / "rgb_dataset" / "features_dino_unified" / TASK / f"{EPISODES[0]}.pt"
    torch.save({"per_frame_features": torch.zeros(1), "frame_paths": [], "meta": {"fn": GridTransform}}, pt)
    with pytest.raises(DataError, match="cannot load with weights_only=True") as e:
        main(["--input", str(tmp_path / "note"), "--out", str(tmp_path / "out"), *ARGS])
    assert e.value.path == str(pt)
    shutil.rmtree(tmp_path / "note" / "rgb_dataset" / "features_vggt_unified")
    content = torch.load(tmp_path / "note" / "rgb_dataset" / "features_dino_unified" / TASK / f"{EPISODES[1]}.pt",
                         weights_only=True)
    torch.save({**content, "meta": {"image_size": [32, 48]}}, pt)  # 4 x 4 cells do not tile 32 x 48
    with pytest.raises(DataError, match="pass --stride"):
        main(["--input", str(tmp_path / "note"), "--out", str(tmp_path / "out"), *ARGS])
