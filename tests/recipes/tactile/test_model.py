"""TactileMAE: both tasks' shapes, masking and sensor tokens, the explicit init, the demo size, and
the pretrained CLIP tower (`mae_tiny`: tests/recipes/tactile/conftest.py)."""

import pytest
import torch
import yaml

from sensorium.errors import ConfigError
from sensorium.layers.patch_embed import patchify
from sensorium.losses import mae_loss
from sensorium.recipes import resolve_config
from sensorium.recipes.tactile.model import TactileMAE


# --- model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sensor_tokens", [0, 2])
def test_static_and_dynamic_forward_shapes_and_finiteness(sensor_tokens, mae_tiny):
    model = mae_tiny(sensor_tokens=sensor_tokens)
    frames = torch.rand(3, 4, 3, 32, 32)
    sensor = torch.tensor([0, 1, 2])
    L, P = 16, 8 * 8 * 3

    static = model.forward_static(frames[:, -1], sensor)
    assert static.pred.shape == static.target.shape == (3, L, P)
    assert static.mask.shape == (3, L) and (static.mask.sum(1) == 12).all()
    assert torch.equal(static.target, patchify(frames[:, -1], 8))

    dynamic = model.forward_dynamic(frames, sensor)
    assert dynamic.recon_pred.shape == dynamic.recon_target.shape == (3, 3 * L, P)
    assert dynamic.recon_mask.shape == (3, 3 * L) and (dynamic.recon_mask.sum(1) == 36).all()
    assert dynamic.future_pred.shape == dynamic.future_target.shape == (3, L, P)
    assert (dynamic.future_mask == 1).all()
    assert torch.equal(dynamic.future_target, patchify(frames[:, 3], 8))
    assert torch.equal(dynamic.recon_target[:, L:2 * L], patchify(frames[:, 1], 8))  # time-major
    for out in (static.pred, dynamic.recon_pred, dynamic.future_pred):
        assert torch.isfinite(out).all()

    loss = (mae_loss(static.pred, static.target, static.mask)
            + mae_loss(dynamic.recon_pred, dynamic.recon_target, dynamic.recon_mask)
            + mae_loss(dynamic.future_pred, dynamic.future_target, dynamic.future_mask))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.temporal_embed.grad is not None and model.mask_token.grad is not None
    if sensor_tokens:
        assert model.sensor_embed.grad.abs().sum() > 0


def test_tube_masking_hides_the_same_positions_in_frames_1_to_3(mae_tiny):
    frames = torch.rand(2, 4, 3, 32, 32)
    tube = mae_tiny(tube_mask=True).forward_dynamic(frames).recon_mask.view(2, 3, 16)
    assert torch.equal(tube[:, 0], tube[:, 1]) and torch.equal(tube[:, 0], tube[:, 2])
    free = mae_tiny(tube_mask=False).forward_dynamic(frames).recon_mask
    assert (free.sum(1) == 36).all()


def test_the_sensor_token_changes_the_output_and_sensor_none_skips_it(mae_tiny):
    model = mae_tiny(sensor_tokens=1).eval()
    imgs = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    a = model.forward_static(imgs, torch.tensor([0, 0]), noise).pred
    b = model.forward_static(imgs, torch.tensor([1, 1]), noise).pred
    c = model.forward_static(imgs, None, noise).pred
    assert not torch.allclose(a, b)
    assert torch.isfinite(c).all()


def test_fixed_noise_fixes_the_mask_and_the_output(mae_tiny):
    model = mae_tiny().eval()
    imgs = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    first, second = model.forward_static(imgs, noise=noise), model.forward_static(imgs, noise=noise)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.pred, second.pred)


def test_mask_ratio_override_shows_whole_frames(mae_tiny):
    model = mae_tiny()
    out = model.forward_dynamic(torch.rand(2, 4, 3, 32, 32), torch.tensor([0, 1]), mask_ratio=0.0)
    assert (out.recon_mask == 0).all() and out.future_pred.shape == (2, 16, 192)
    assert (model.forward_static(torch.rand(2, 3, 32, 32), mask_ratio=0.5).mask.sum(1) == 8).all()


def test_dynamic_mask_ratio_masks_the_context_frames_only(mae_tiny):
    model = mae_tiny(dynamic_mask_ratio=0.5)
    frames = torch.rand(2, 4, 3, 32, 32)
    out = model.forward_dynamic(frames)
    assert (out.recon_mask.sum(1) == 24).all()  # half of 3 x 16 context patches (tube: 8 per frame)
    assert (model.forward_static(frames[:, -1]).mask.sum(1) == 12).all()  # the static task keeps 0.75
    assert (model.forward_dynamic(frames, mask_ratio=0.0).recon_mask == 0).all()  # an override still wins
    assert mae_tiny().dynamic_mask_ratio == 0.75  # default: the model's mask_ratio
    with pytest.raises(ValueError, match="dynamic_mask_ratio"):
        mae_tiny(dynamic_mask_ratio=1.0)


def test_motion_cue_starts_as_the_model_without_it_and_reads_changes_at_seen_positions(mae_tiny):
    torch.manual_seed(0)
    plain = mae_tiny(dynamic_mask_ratio=0.5)
    torch.manual_seed(0)
    cued = mae_tiny(dynamic_mask_ratio=0.5, motion_cue=True)
    cued.load_state_dict({**plain.state_dict(), **{k: v for k, v in cued.state_dict().items() if "motion_cue" in k}})
    frames, noise = torch.rand(2, 4, 3, 32, 32), torch.rand(2, 16)
    # zero-initialised: the same prediction as without the cue
    torch.testing.assert_close(cued.forward_dynamic(frames, noise=noise).future_pred,
                               plain.forward_dynamic(frames, noise=noise).future_pred)
    # the cue at a position: frame-to-frame changes there, zero where the tube mask hid it
    context = patchify(frames[:, :3].flatten(0, 1), 8).view(2, 3, 16, -1)  # (B, ctx, L, P)
    mask = (noise > noise.median(dim=1, keepdim=True).values).float()[:, None].expand(2, 3, 16)  # 1 = masked
    with torch.no_grad():
        cued.motion_cue.weight.copy_(torch.eye(32, 2 * 192))  # the first 32 values of frame 2 - frame 1
    cue = cued.motion(context, mask)  # (B, L, 32)
    seen = mask[:, 0] == 0
    torch.testing.assert_close(cue[seen], (context[:, 1] - context[:, 0])[..., :32][seen])
    assert (cue[~seen] == 0).all()
    # still frames give no cue
    still = frames[:, :1].expand(-1, 4, -1, -1, -1)
    assert cued.motion(patchify(still[:, :3].flatten(0, 1), 8).view(2, 3, 16, -1), mask).abs().max() == 0
    with pytest.raises(ValueError, match="motion_cue"):
        mae_tiny(motion_cue=True, future_residual=False)


def test_encode_features_pools_patch_tokens_without_masking(mae_tiny):
    model = mae_tiny()
    imgs = torch.rand(4, 3, 32, 32)
    mean = model.encode_features(imgs, torch.zeros(4, dtype=torch.long))
    cls = model.encode_features(imgs, pool="cls")
    assert mean.shape == cls.shape == (4, 64) and not mean.requires_grad
    assert torch.isfinite(mean).all()


def test_init_is_explicit(mae_tiny):
    model = mae_tiny()
    assert model.decoder_pred.bias.abs().sum() == 0  # zero biases (MAE)
    assert 0.01 < model.mask_token.std().item() < 0.04  # normal(0.02)
    assert not any(name.endswith("pos_embed") for name, _ in model.named_parameters())  # fixed sin-cos


def test_config_errors(mae_tiny):
    with pytest.raises(ValueError, match="mask_ratio"):
        mae_tiny(mask_ratio=1.0)
    with pytest.raises(ValueError, match="frames"):
        mae_tiny().forward_dynamic(torch.rand(1, 3, 3, 32, 32))


def test_the_demo_yaml_size_predicts_frame_4():
    """The demo's network, sized by its YAML (the one source of sizes), runs the dynamic task."""
    config = yaml.safe_load(resolve_config("tactile/demo").read_text())["model"]["init_args"]["model"]
    demo = TactileMAE(**config)
    out = demo.forward_dynamic(torch.rand(1, 4, 3, 64, 64), torch.tensor([2]))
    assert out.future_pred.shape == (1, 64, 192)


# --- the pretrained CLIP tower --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=28, patch_size=7, num_channels=3)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPVisionModel(config).save_pretrained(path)
    return path


def test_clip_tower_loads_from_a_local_dir_and_runs_both_tasks(tiny_clip_dir):
    from transformers import CLIPVisionModel

    model = TactileMAE(img_size=28, patch_size=7, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                       sensor_tokens=2, pretrained=str(tiny_clip_dir))
    reference = CLIPVisionModel.from_pretrained(str(tiny_clip_dir))
    # the pretrained weights survive the MAE's own initialisation
    torch.testing.assert_close(model.encoder.tower.embeddings.patch_embedding.weight,
                               reference.embeddings.patch_embedding.weight)
    frames = torch.rand(2, 4, 3, 28, 28)
    sensor = torch.tensor([0, 2])
    static = model.forward_static(frames[:, 0], sensor)
    assert static.pred.shape == (2, 16, 7 * 7 * 3) and (static.mask.sum(1) == 12).all()
    dynamic = model.forward_dynamic(frames, sensor)
    assert dynamic.recon_pred.shape == (2, 48, 147) and dynamic.future_pred.shape == (2, 16, 147)
    loss = mae_loss(dynamic.future_pred, dynamic.future_target, dynamic.future_mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.tower.encoder.layers[0].self_attn.q_proj.weight.grad is not None


def test_clip_path_without_masking_matches_the_tower_itself(tiny_clip_dir):
    """Our stage-by-stage run of the tower equals CLIPVisionModel's forward (up to the post-norm,
    which CLIP applies to the pooled CLS only)."""
    from transformers import CLIPVisionModel

    model = TactileMAE(img_size=28, patch_size=7, sensor_tokens=0, pretrained=str(tiny_clip_dir)).eval()
    reference = CLIPVisionModel.from_pretrained(str(tiny_clip_dir)).eval()
    imgs = torch.rand(2, 3, 28, 28)
    ours = model.encode_features(imgs, pool="cls")
    theirs = reference(pixel_values=imgs).pooler_output
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_clip_size_mismatch_and_missing_dir_are_errors(tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="28 px"):
        TactileMAE(img_size=32, patch_size=8, pretrained=str(tiny_clip_dir))
    with pytest.raises(ConfigError, match="config.json"):
        TactileMAE(pretrained=str(tmp_path / "nowhere"))
