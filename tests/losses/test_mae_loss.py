import pytest
import torch

from sensorium.losses import mae_loss
from sensorium.losses.masked import MaeLoss, normalize_patches


def _inputs(B=3, L=16, P=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, L, P, generator=g)
    target = torch.randn(B, L, P, generator=g)
    mask = (torch.rand(B, L, generator=g) < 0.75).float()
    mask[:, 0] = 1  # at least one masked patch per sample
    return pred, target, mask


@pytest.mark.parametrize("norm_pix", [True, False])
def test_zero_when_pred_equals_target_on_masked_patches(norm_pix):
    pred, target, mask = _inputs()
    scored = normalize_patches(target) if norm_pix else target
    perfect = torch.where(mask[..., None].bool(), scored, pred)  # visible patches stay wrong
    assert mae_loss(perfect, target, mask, norm_pix=norm_pix).item() == pytest.approx(0.0, abs=1e-10)
    assert mae_loss(pred, target, mask, norm_pix=norm_pix).item() > 0.5


def test_unmasked_patches_do_not_count():
    pred, target, mask = _inputs()
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert torch.equal(mae_loss(pred, target, mask), mae_loss(changed, target, mask))


def test_is_the_mean_over_masked_patches_of_per_patch_mse():
    pred, target, mask = _inputs()
    per_patch = (pred - target).pow(2).mean(-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(mae_loss(pred, target, mask, norm_pix=False), expected)


def test_norm_pix_is_invariant_to_per_patch_affine_changes_of_the_target():
    pred, target, mask = _inputs()
    g = torch.Generator().manual_seed(1)
    scale = torch.rand(*target.shape[:2], 1, generator=g) * 5 + 0.5  # positive, per patch
    shift = torch.randn(*target.shape[:2], 1, generator=g) * 10
    torch.testing.assert_close(mae_loss(pred, target, mask), mae_loss(pred, target * scale + shift, mask),
                               rtol=1e-4, atol=1e-4)
    # without norm_pix the same change moves the loss
    assert not torch.allclose(mae_loss(pred, target, mask, norm_pix=False),
                              mae_loss(pred, target * scale + shift, mask, norm_pix=False))


def test_gradient_flows_only_through_masked_patches():
    pred, target, mask = _inputs()
    pred.requires_grad_(True)
    target.requires_grad_(True)
    mae_loss(pred, target, mask).backward()
    grad_norm = pred.grad.abs().sum(-1)  # (B, L)
    assert (grad_norm[mask == 0] == 0).all()
    assert (grad_norm[mask == 1] > 0).all()
    assert target.grad is None  # the target is a constant


def test_frame_prediction_scores_every_patch_and_empty_mask_is_zero():
    pred, target, _ = _inputs()
    ones = torch.ones(pred.shape[:2])
    expected = (pred - normalize_patches(target)).pow(2).mean()
    torch.testing.assert_close(mae_loss(pred, target, ones), expected)
    assert mae_loss(pred, target, torch.zeros(pred.shape[:2])).item() == 0.0


def test_bool_mask_and_module_wrapper_agree():
    pred, target, mask = _inputs()
    loss = MaeLoss(norm_pix=True)
    torch.testing.assert_close(loss(pred, target, mask.bool()), mae_loss(pred, target, mask))
    with pytest.raises(ValueError, match="eps"):
        MaeLoss(eps=0.0)


def test_shape_mismatch_is_an_error():
    pred, target, mask = _inputs()
    with pytest.raises(ValueError, match="mask"):
        mae_loss(pred, target, mask[:, :-1])
    with pytest.raises(ValueError, match="differ"):
        mae_loss(pred, target[..., :-1], mask)


def test_bf16_inputs_give_an_fp32_loss():
    pred, target, mask = _inputs()
    loss = mae_loss(pred.bfloat16(), target.bfloat16(), mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
