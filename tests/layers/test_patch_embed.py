import pytest
import torch

from sensorium.layers.patch_embed import PatchEmbed, patchify, unpatchify


@pytest.mark.parametrize("shape,patch", [((2, 3, 32, 32), 8), ((2, 3, 16, 24), 4), ((2, 4, 3, 28, 28), 14)])
def test_patchify_unpatchify_round_trip(shape, patch):
    imgs = torch.randn(shape)
    patches = patchify(imgs, patch)
    h, w = shape[-2] // patch, shape[-1] // patch
    assert patches.shape == (*shape[:-3], h * w, patch * patch * shape[-3])
    assert torch.equal(unpatchify(patches, patch, (h, w), shape[-3]), imgs)


def test_patch_order_is_row_major_and_pixels_are_p_p_c():
    imgs = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # C=2, 4x4, patch 2
    patches = patchify(imgs, 2)  # (1, 4, 8)
    # patch 1 is the top-right 2x2 block; within a patch, channels vary fastest
    top_right = imgs[0, :, :2, 2:].permute(1, 2, 0).reshape(-1)  # (p, p, C)
    assert torch.equal(patches[0, 1], top_right)


def test_patchify_rejects_indivisible_images():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 3, 30, 32), 8)


def test_patch_embed_matches_a_linear_map_of_each_patch():
    embed = PatchEmbed(img_size=16, patch_size=4, in_chans=3, dim=8)
    imgs = torch.randn(2, 3, 16, 16)
    tokens = embed(imgs)
    assert tokens.shape == (2, 16, 8)
    # the conv is a Linear over each patch flattened as (C, p, p)
    flat = imgs.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(2, 16, 48)
    expected = flat @ embed.proj.weight.view(8, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
