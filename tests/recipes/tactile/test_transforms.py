"""Tactile batch augmentation: one draw per sequence for all its frames, normalisation only in eval."""

import torch

from sensorium.recipes.tactile.transforms import TactileAugment


def test_augmentation_is_identical_across_the_frames_of_a_sequence():
    torch.manual_seed(0)
    frame = torch.rand(6, 1, 3, 32, 32)
    frames = frame.expand(6, 4, 3, 32, 32).contiguous()  # four identical frames per sequence
    augment = TactileAugment(32, hflip=0.5, vflip=0.5).train()
    out = augment(frames)
    assert out.shape == frames.shape
    for t in range(1, 4):
        torch.testing.assert_close(out[:, t], out[:, 0], rtol=0, atol=0)
    # ... while different sequences draw different parameters
    same = augment(frame[:1].expand(6, 4, 3, 32, 32).contiguous())
    assert not torch.allclose(same[0], same[1])


def test_eval_mode_only_normalises_and_denormalize_inverts():
    augment = TactileAugment(16).eval()
    frames = torch.rand(2, 4, 3, 16, 16)
    out = augment(frames)
    torch.testing.assert_close(augment.denormalize(out), frames)
    torch.testing.assert_close(out[:, 0, 0], (frames[:, 0, 0] - 0.485) / 0.229)
    assert augment(frames[:, 0]).shape == (2, 3, 16, 16)
