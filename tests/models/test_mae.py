"""The generic MAE masking: an exact visible count, per-sample masks, and ids_restore inverting the
shuffle. TactileMAE's tests: tests/recipes/tactile/test_model.py."""

import pytest
import torch

from sensorium.models.mae import num_visible, random_masking


# --- masking -------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,ratio", [(16, 0.75), (64, 0.75), (256, 0.75), (48, 0.5), (49, 0.75)])
def test_masking_hides_an_exact_count_in_every_sample(N, ratio):
    x = torch.randn(5, N, 8)
    keep = num_visible(N, ratio)
    visible, mask, _ = random_masking(x, keep)
    assert visible.shape == (5, keep, 8)
    assert (mask.sum(1) == N - keep).all()
    if N in (16, 64, 256) and ratio == 0.75:
        assert mask.mean().item() == 0.75  # exact ratio


def test_masking_differs_per_sample_and_call():
    x = torch.randn(8, 64, 4)
    _, mask_a, _ = random_masking(x, 16)
    _, mask_b, _ = random_masking(x, 16)
    assert len({tuple(m.tolist()) for m in mask_a}) == 8  # each sample its own mask
    assert not torch.equal(mask_a, mask_b)


def test_ids_restore_inverts_the_shuffle_and_visible_tokens_are_the_unmasked_ones():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 16, 1).expand(2, 16, 3).contiguous()
    visible, mask, ids_restore = random_masking(x, 4)
    masked_filler = torch.full((2, 12, 3), -1.0)
    index = ids_restore[..., None].expand(-1, -1, 3)
    restored = torch.gather(torch.cat([visible, masked_filler], 1), 1, index)
    assert torch.equal(restored[mask == 0], x[mask == 0])  # visible tokens return to their places
    assert (restored[mask == 1] == -1).all()  # and mask tokens fill exactly the masked ones
