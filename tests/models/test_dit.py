"""The diffusion transformer: label dropout through the null class, adaLN-Zero's identity start,
and every option combination's shapes and gradients."""

import pytest
import torch

from sensorium.models.dit import DiT, LabelEmbedder


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    embedder = LabelEmbedder(num_classes=31, dim=8, dropout=0.1).train()
    torch.manual_seed(0)
    labels = torch.randint(0, 31, (200_000,))
    dropped = embedder.drop(labels)
    rate = float((dropped == 31).float().mean())
    assert abs(rate - 0.1) < 0.003  # 0.1 +- ~4.5 standard errors of a binomial at n = 2e5
    kept = dropped != 31
    assert torch.equal(dropped[kept], labels[kept])  # the others are untouched
    embedder.eval()
    torch.testing.assert_close(embedder(labels[:50]), embedder.table(labels[:50]))  # no dropout at inference


def test_the_untrained_model_predicts_zero_velocity_and_ignores_its_condition():
    """adaLN-Zero: every block starts as the identity and the output layer at zero."""
    model = DiT(input_size=8, in_channels=4, patch_size=2, dim=32, depth=2, num_heads=2, num_classes=5)
    out = model(torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 4, 5]))
    assert out.shape == (3, 4, 8, 8) and torch.count_nonzero(out) == 0


@pytest.mark.parametrize("options", [{}, {"swiglu": True, "rms_norm": True, "rope": True, "qk_norm": True},
                                     {"rope": True, "patch_size": 1}])
def test_shapes_and_gradients_with_every_option(options):
    torch.manual_seed(0)
    model = DiT(**{"input_size": 8, "in_channels": 3, "patch_size": 2, "dim": 32, "depth": 2, "num_heads": 2,
                   "num_classes": 4, **options})
    for p in model.parameters():  # leave the zero start, so that gradients reach every layer
        p.data.add_(0.02 * torch.randn_like(p))
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([1, 4])
    out = model(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_the_prediction_depends_on_the_position_of_a_token():
    """Positions (sin-cos or RoPE) make the model tell tokens apart: shifting the input is not
    shifting the output."""
    for rope in (False, True):
        torch.manual_seed(0)
        model = DiT(input_size=8, in_channels=2, patch_size=2, dim=32, depth=1, num_heads=2, num_classes=2,
                    rope=rope)
        for p in model.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        x, t, y = torch.randn(1, 2, 8, 8), torch.rand(1), torch.tensor([0])
        shifted = model(torch.roll(x, 2, dims=3), t, y)
        assert not torch.allclose(shifted, torch.roll(model(x, t, y), 2, dims=3), atol=1e-4)

