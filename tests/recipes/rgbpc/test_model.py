"""The rgbpc networks: the same-patch negative mask, temporal gates and fusion gates summing to one,
shapes of the alignment net (conv and mlp adapters, with and without temporal pooling), the
student's features at pixels, and the action head."""

import pytest
import torch

from sensorium.errors import ConfigError
from sensorium.recipes.rgbpc.model import (
    ActionHead,
    AlignNet,
    AlignNetConfig,
    ConvAdapter,
    StudentCNN,
    StudentConfig,
    TemporalGatedPooling,
    same_patch_mask,
)


def test_same_patch_mask_marks_pairs_of_one_frame_closer_than_a_patch():
    frame = torch.tensor([7, 7, 7, 8])
    uv = torch.tensor([[10.0, 10.0], [15.9, 10.0], [10.0, 16.5], [10.0, 10.0]])
    mask = same_patch_mask(frame, uv, frame, uv, patch_px=6.0)
    expected = torch.tensor([[1, 1, 0, 0],   # 5.9 px apart in u: one patch; 6.5 px in v: not
                             [1, 1, 0, 0],
                             [0, 0, 1, 0],
                             [0, 0, 0, 1]], dtype=torch.bool)  # the same uv in another frame is a negative
    assert torch.equal(mask, expected)
    # against a gathered global batch: the local rows' own positions sit at an offset
    glob_frame, glob_uv = torch.cat([torch.tensor([1, 2]), frame]), torch.cat([torch.zeros(2, 2), uv])
    assert torch.equal(same_patch_mask(frame, uv, glob_frame, glob_uv, 6.0)[:, 2:], expected)


def _batch(B=2, K=5, T=1, encoders=(("a", 6, (3, 4)), ("b", 4, (2, 3)))):
    torch.manual_seed(0)
    batch = {"pc_feat": torch.randn(B, K, 32), "anchor": torch.zeros(B, dtype=torch.long)}
    for name, C, (Hf, Wf) in encoders:
        batch[f"feat/{name}"] = torch.randn(B, T, Hf, Wf, C).half()
        batch[f"grid/{name}"] = torch.rand(B, K, 2) * torch.tensor([Wf - 1, Hf - 1])
    return batch


@pytest.mark.parametrize("adapter", ["conv", "mlp"])
@pytest.mark.parametrize("fusion", ["weighted", "gate", "concat"])
def test_align_net_shapes(adapter, fusion):
    net = AlignNet(AlignNetConfig(encoders={"a": 6, "b": 4}, dim=16, adapter=adapter, adapter_hidden=8, fusion=fusion,
                                  pc_dim=32))
    batch = _batch()
    out = net.patch_features(batch)
    assert out.fused.shape == (2, 5, 16) and out.per_encoder.shape == (2, 5, 2, 16)
    if fusion != "concat":
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, 5))
    assert net.point_features(batch).shape == (2, 5, 16)
    assert net.set_features(batch, tokens=3).shape == (2, 16) and net.set_features(batch).shape == (2, 16)
    assert net.set_teacher_features(batch).shape == (2, 16)


def test_coord_channels_let_the_conv_adapter_tell_places_apart():
    uniform = torch.ones(1, 6, 5, 7)  # every cell has the same features
    for coords in (False, True):
        torch.manual_seed(0)
        with torch.no_grad():
            out = ConvAdapter(6, 4, 8, coords=coords)(uniform)[0]  # (4, 5, 7)
        interior = out[:, 2:3, 2:5]  # cells whose 5 x 5 neighbourhood is inside the grid
        spread = float((interior - interior[:, :, :1]).abs().max())
        assert (spread > 1e-3) if coords else (spread < 1e-5)
    with pytest.raises(ConfigError, match="coord_channels"):
        AlignNet(AlignNetConfig(encoders={"a": 6}, dim=8, adapter="mlp", coord_channels=True))


def test_temporal_gates_sum_to_one_and_the_anchor_frame_is_used_without_pooling():
    pool = TemporalGatedPooling(dim=8, window=4)
    with torch.no_grad():
        pool.score.weight.normal_()
    x = torch.randn(3, 4, 5, 8)
    pooled, gates = pool(x, torch.tensor([0, 2, 3]))
    assert pooled.shape == (3, 5, 8) and bool((gates > 0).all())
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(3, 5))
    temporal = AlignNet(AlignNetConfig(encoders={"a": 6, "b": 4}, dim=16, temporal=True, window=4))
    batch = _batch(T=4)
    assert temporal.patch_features(batch).fused.shape == (2, 5, 16)
    # without temporal pooling a whole window is reduced to its anchor frame
    plain = AlignNet(AlignNetConfig(encoders={"a": 6, "b": 4}, dim=16))
    batch["anchor"] = torch.tensor([1, 3])
    anchor_only = {**batch, **{f"feat/{e}": batch[f"feat/{e}"][torch.arange(2), batch["anchor"]][:, None]
                               for e in ("a", "b")}, "anchor": torch.zeros(2, dtype=torch.long)}
    torch.testing.assert_close(plain.patch_features(batch).fused, plain.patch_features(anchor_only).fused)


def test_student_reads_its_map_at_pixels():
    student = StudentCNN(StudentConfig(widths=(4, 8), dim=6))
    images = torch.randint(0, 255, (2, 3, 16, 24), dtype=torch.uint8)
    maps = student(images)
    assert maps.shape == (2, 6, 4, 6) and student.stride == 4
    # the centre of cell (row 1, col 2) is pixel (u, v) = (2 * 4 + 1.5, 1 * 4 + 1.5)
    at = student.at_points(images, torch.tensor([[[9.5, 5.5]], [[9.5, 5.5]]]))
    torch.testing.assert_close(at[:, 0], maps[:, :, 1, 2])
    with pytest.raises(ValueError, match="whole number"):
        student(torch.zeros(1, 3, 18, 24, dtype=torch.uint8))


def test_action_head_is_permutation_invariant_over_points():
    head = ActionHead(7, num_tasks=3, action_dim=3)
    x, task = torch.randn(4, 10, 7), torch.tensor([0, 1, 2, 1])
    out = head(x, task)
    assert out.shape == (4, 3)
    torch.testing.assert_close(head(x[:, torch.randperm(10)], task), out)
    assert not torch.allclose(head(x, torch.tensor([1, 1, 2, 1]))[0], out[0])  # the task matters
