"""The synthetic generator writes the real layout, deterministically, with exact geometry: every
point projects onto its uv through camera.json, carries the colour of that pixel, and its teacher
features encode its position and surface part; actions lead the effector to the target."""

import json

import numpy as np
from PIL import Image

from sensorium.recipes.rgbpc.reader import read_actions, read_camera, read_ply, read_point_sidecar
from sensorium.recipes.rgbpc.synth import PARTS, TASKS, SynthConfig, _teacher_matrices, generate


def test_layout_and_determinism(tiny_data, tmp_path):
    assert sorted(p.name for p in (tiny_data / "rgb").iterdir()) == sorted(TASKS)
    episode = tiny_data / "rgb" / "reach_box" / "episode_000"
    assert sorted(p.name for p in episode.iterdir())[:2] == ["camera.json", "step_0000.png"]
    assert len(list(episode.glob("step_*.png"))) == 10
    small = SynthConfig(episodes_per_task=1, steps=2, image_size=(16, 24), points=32)
    a = generate(tmp_path / "a", seed=3, config=small, tasks=("reach_sphere",))
    # two worker processes (the demo's default) write the same bytes as one; two episodes, so each
    # worker renders one (an episode's draw depends on its index, not on how many there are)
    b = generate(tmp_path / "b", seed=3, config=SynthConfig(episodes_per_task=2, steps=2, image_size=(16, 24),
                                                            points=32), tasks=("reach_sphere",), workers=2)
    for relative in ("rgb/reach_sphere/episode_000/step_0001.png", "pc/reach_sphere/episode_000/step_0001.ply",
                     "actions/reach_sphere/episode_000.csv"):
        assert (a / relative).read_bytes() == (b / relative).read_bytes(), relative
    c = generate(tmp_path / "c", seed=4, config=small, tasks=("reach_sphere",))
    assert (c / "rgb/reach_sphere/episode_000/step_0001.png").read_bytes() != \
        (a / "rgb/reach_sphere/episode_000/step_0001.png").read_bytes()


def test_points_project_onto_their_uv_and_carry_its_colour(tiny_data):
    directory = tiny_data / "rgb" / "reach_cylinder" / "episode_001"
    camera = read_camera(directory / "camera.json")
    for step in ("step_0000", "step_0009"):
        xyz, rgb = read_ply(tiny_data / "pc" / "reach_cylinder" / "episode_001" / f"{step}.ply")
        uv, features = read_point_sidecar(tiny_data / "pc" / "reach_cylinder" / "episode_001" / f"{step}.npz",
                                          len(xyz), camera.image_size, require_features=True)
        pose = camera.camera_to_world[step]
        local = (xyz.astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]  # world -> camera (x right, y down, z forward)
        projected = np.stack([camera.fx * local[:, 0] / local[:, 2] + camera.cx,
                              camera.fy * local[:, 1] / local[:, 2] + camera.cy], axis=1)
        np.testing.assert_allclose(projected, uv, atol=2e-3)
        np.testing.assert_allclose(camera.depth(step, xyz), local[:, 2])
        pixels = np.asarray(Image.open(directory / f"{step}.png").convert("RGB")).astype(float)
        at_uv = pixels[np.rint(uv[:, 1]).astype(int), np.rint(uv[:, 0]).astype(int)]
        assert np.median(np.abs(at_uv - rgb).max(axis=1)) < 20  # differs only at edges and stripes
        assert features.shape == (len(xyz), 32) and features.dtype == np.float32


def test_teacher_features_encode_position_and_part(tiny_data):
    parts, mix = _teacher_matrices()
    xyz, _ = read_ply(tiny_data / "pc" / "reach_sphere" / "episode_000" / "step_0004.ply")
    features = np.load(tiny_data / "pc" / "reach_sphere" / "episode_000" / "step_0004.npz")["pc_feat"]
    raw = features.astype(np.float64) @ mix  # the fixed orthogonal mix is invertible
    np.testing.assert_allclose(raw[:, :3] * 0.4, xyz, atol=1e-5)
    part = (raw[:, -len(PARTS):] @ parts.T).argmax(axis=1)
    names = {PARTS[i] for i in np.unique(part)}
    assert {"table", "sphere", "effector"} <= names  # the target of reach_sphere is in view
    assert np.all(np.abs(raw[part == PARTS.index("table"), 9:12] - [0, 0, 1]) < 1e-5)  # the table's normal is up


def test_actions_lead_the_effector_to_the_target(tiny_data):
    info = json.loads((tiny_data / "synth.json").read_text())
    assert info["actions"] == ["dx", "dy", "dz"]
    steps = [f"step_{i:04d}" for i in range(10)]
    actions, names = read_actions(tiny_data / "actions" / "reach_box" / "episode_002.csv", steps)
    assert actions.shape == (10, 3) and names == ["dx", "dy", "dz"]
    norms = np.linalg.norm(actions, axis=1)
    assert norms[-1] < 0.5 * norms[0]  # 15% of the way per step
