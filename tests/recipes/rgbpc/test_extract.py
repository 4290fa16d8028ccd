"""`sensorium extract rgbpc`: packs hold the encoders' features of every frame with their exact
transform; finished packs are skipped; shards split the episodes; a local transformers backbone
(a tiny random DINOv2 saved to a temporary directory) extracts through the same path."""

import numpy as np
import pytest
import torch

from sensorium.data.packs import open_pack
from sensorium.errors import ConfigError
from sensorium.recipes.rgbpc.encoders import EncoderSpec, ShapePretraining, build_encoder
from sensorium.recipes.rgbpc.extract import extract, parse_shard
from sensorium.recipes.rgbpc.reader import read_frames

PRETRAINING = ShapePretraining(views=16, steps=5, batch_size=8)  # as in conftest.py


def test_packs_hold_the_encoders_features(tiny_data):
    frames_dir = tiny_data / "rgb" / "reach_box" / "episode_003"
    frames = read_frames(sorted(frames_dir.glob("step_*.png")))
    for name, grid, channels in (("shape8", (4, 6), 96), ("vit16", (3, 4), 64)):
        pack = open_pack(tiny_data / "features" / name / "reach_box" / "episode_003.zarr")
        assert pack.grid == grid and pack.channels == channels and pack.num_frames == 10
        assert pack.frame_paths[0] == "reach_box/episode_003/step_0000.png"
        encoder = build_encoder(EncoderSpec.parse(name), (32, 48), seed=0, pretraining=PRETRAINING)
        assert pack.transform == encoder.transform and pack.extra == encoder.extra
        np.testing.assert_allclose(pack.frames(0, 10).astype(np.float32), encoder(frames), rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(pack.windows, [[0, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7, 8, 9]])
    assert open_pack(tiny_data / "features" / "vit16" / "reach_box" / "episode_003.zarr").transform.resize == (48, 64)


def test_resumable_and_sharded(data_copy, monkeypatch):
    import shutil

    again = extract(data_copy / "rgb", data_copy / "features", ["shape8", "vit16"], window=8, window_stride=2,
                    progress=False, pretraining=PRETRAINING)
    assert again == {"episodes": 12, "written": 0, "skipped": 24, "shard": [0, 1]}
    shutil.rmtree(data_copy / "features" / "vit16" / "reach_sphere" / "episode_001.zarr")
    redo = extract(data_copy / "rgb", data_copy / "features", ["shape8", "vit16"], window=8, window_stride=2,
                   progress=False, pretraining=PRETRAINING)
    assert redo["written"] == 1 and redo["skipped"] == 23
    # other windowing or other pretraining: every pack is stale
    stale = extract(data_copy / "rgb", data_copy / "features", ["shape8"], window=8, window_stride=2,
                    shard=(1, 4), progress=False, pretraining=ShapePretraining(views=16, steps=6, batch_size=8))
    assert stale["episodes"] == 3 and stale["written"] == 3
    assert parse_shard("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (2, 3)
    with pytest.raises(ConfigError, match="i/n"):
        parse_shard("2")


def test_a_local_transformers_backbone(tiny_data, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    local = tmp_path / "tiny-dinov2"
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=8, image_size=32)).save_pretrained(local)
    out = tmp_path / "features"
    result = extract(tiny_data / "rgb", out, [f"dino=hf:{local}"], resize=(32, 48), shard=(0, 6), progress=False)
    assert result["written"] == 2
    pack = open_pack(out / "dino" / "reach_box" / "episode_000.zarr")
    assert pack.grid == (4, 6) and pack.channels == 16 and pack.extra["model_type"] == "dinov2"
    assert pack.transform.stride == 8 and pack.transform.resize == (32, 48)
    with pytest.raises(ConfigError, match="not a local transformers checkpoint"):
        build_encoder(EncoderSpec.parse(f"x=hf:{tmp_path / 'nothing'}"), (32, 48), 0)


def test_shape8_is_pretrained_deterministically_on_views_of_its_own():
    """Two builds give the same weights; the pretraining changes them from the seeded initialisation;
    the pretraining views come from their own stream, not from any episode."""
    from sensorium.recipes.rgbpc.synth import SynthConfig, render_views

    a = build_encoder(EncoderSpec.parse("shape8"), (32, 48), seed=0, pretraining=PRETRAINING)
    b = build_encoder(EncoderSpec.parse("shape8"), (32, 48), seed=0, pretraining=PRETRAINING)
    untrained = build_encoder(EncoderSpec.parse("shape8"), (32, 48), seed=0,
                              pretraining=ShapePretraining(views=16, steps=0))
    for (name, pa), pb, pu in zip(a.net.state_dict().items(), b.net.state_dict().values(),
                                  untrained.net.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert any(not torch.equal(pa, pu) for pa, pu in zip(a.net.state_dict().values(), untrained.net.state_dict().values()))
    images, depth, parts = render_views(3, seed=2, config=SynthConfig(image_size=(32, 48)))
    assert images.shape == (3, 32, 48, 3) and depth.shape == parts.shape == (3, 32, 48)
    assert (depth[parts < 8] > 0).all() and (depth[parts == 8] == 0).all()


def test_an_encoders_value_is_parsed_once_into_a_spec():
    assert EncoderSpec.parse("vit16") == EncoderSpec("vit16", "vit16")
    assert EncoderSpec.parse("dino=hf:models/dinov2") == EncoderSpec("dino", "hf", "models/dinov2")
    with pytest.raises(ConfigError, match="unknown encoder; built in: conv8, vit16, shape8"):
        EncoderSpec.parse("vit32")
    with pytest.raises(ConfigError, match="NAME=hf:LOCAL_DIR"):
        EncoderSpec.parse("dino=models/dinov2")
    with pytest.raises(ConfigError, match="multiples of 8"):
        build_encoder(EncoderSpec.parse("conv8"), (30, 48), seed=0)


def test_pretraining_in_bf16_learns_as_fp32_does_and_is_recorded_in_the_packs():
    from sensorium.recipes.rgbpc.encoders import ConvGridEncoder, pretrain_on_views, rendered_views

    views = rendered_views(24, 0, (32, 48))
    frames, depth, _ = views

    def depth_readout_error(net: torch.nn.Module) -> float:
        """Mean absolute error of the best linear readout of each cell's depth from its features."""
        with torch.no_grad():
            features = net(frames).flatten(0, 2)  # (B * Hf * Wf, C)
        design = torch.cat([features, torch.ones(len(features), 1)], dim=1)
        target = depth.permute(0, 2, 3, 1).reshape(-1, 1)
        fit = torch.linalg.lstsq(design, target).solution
        return float((design @ fit - target).abs().mean())

    def build() -> torch.nn.Module:
        return ConvGridEncoder((8, 12, 16))

    torch.manual_seed(0)
    untrained = depth_readout_error(build())
    for bf16 in (False, True):
        settings = ShapePretraining(views=24, steps=60, batch_size=8, bf16=bf16)
        net = pretrain_on_views(build, lambda n, x: n(x).permute(0, 3, 1, 2), 16, views, 0, settings)
        assert all(torch.isfinite(p).all() for p in net.parameters())
        assert depth_readout_error(net) < 0.9 * untrained, f"bf16={bf16}"
    # the packs record the precision with the rest of the pretraining, so a change re-extracts them
    in_fp32 = ShapePretraining(views=16, steps=5, batch_size=8, bf16=False)
    assert build_encoder(EncoderSpec.parse("shape8"), (32, 48), seed=0, pretraining=PRETRAINING).extra["bf16"] is True
    assert build_encoder(EncoderSpec.parse("shape8"), (32, 48), seed=0, pretraining=in_fp32).extra["bf16"] is False


def test_bf16_pretraining_inside_an_outer_autocast_region_trains_as_outside_it():
    # An inner bf16 region with the cast cache on would reuse the first step's weights until the
    # outer region ends (a fit's hooks run inside one).
    from sensorium.recipes.rgbpc.encoders import ConvGridEncoder, pretrain_on_views, rendered_views

    views = rendered_views(16, 0, (32, 48))
    settings = ShapePretraining(views=16, steps=6, batch_size=8, bf16=True)

    def pretrain() -> torch.nn.Module:
        return pretrain_on_views(lambda: ConvGridEncoder((8, 12, 16)), lambda n, x: n(x).permute(0, 3, 1, 2), 16,
                                 views, 0, settings)

    plain = pretrain()
    with torch.autocast("cpu", enabled=False):
        nested = pretrain()
    for a, b in zip(plain.parameters(), nested.parameters()):
        torch.testing.assert_close(a, b)


def test_the_command_trains_shape8_in_bf16_unless_told_fp32(monkeypatch, tmp_path):
    import sensorium.recipes.rgbpc.extract as command

    seen = []

    def fake_extract(*args, pretraining, **kwargs):
        seen.append(pretraining)
        return {"episodes": 0, "written": 0, "skipped": 0, "shard": [0, 1]}

    monkeypatch.setattr(command, "extract", fake_extract)
    base = ["--frames", str(tmp_path), "--out", str(tmp_path / "features"), "--no-progress"]
    assert command.main(base) == 0 and command.main([*base, "--fp32-pretraining"]) == 0
    assert [s.bf16 for s in seen] == [True, False]
    assert seen[1].steps == seen[0].steps  # only the precision differs
