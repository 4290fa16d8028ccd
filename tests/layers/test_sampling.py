"""Bilinear sampling of feature maps at continuous cell coordinates (cell centres at integers)."""

import torch

from sensorium.layers.sampling import sample_points


def test_bilinear_sample_equals_the_hand_computed_value():
    # [[0, 1, 2],
    #  [3, 4, 5]]   and a second channel 10x the first
    grid = torch.arange(6.0).view(2, 3)
    feature_map = torch.stack([grid, 10 * grid])[None]  # (1, 2, 2, 3)
    points = torch.tensor([[[0.5, 0.5], [1.0, 0.75], [0.25, 0.0], [2.0, 1.0]]])  # (x, y)
    out = sample_points(feature_map, points)  # (1, 4, 2)
    # (0.5, 0.5): mean of 0, 1, 3, 4; (1, 0.75): 0.25 * 1 + 0.75 * 4; (0.25, 0): 0.75 * 0 + 0.25 * 1;
    # (2, 1): the centre of the last cell
    expected = torch.tensor([2.0, 3.25, 0.25, 5.0])
    torch.testing.assert_close(out[0, :, 0], expected)
    torch.testing.assert_close(out[0, :, 1], 10 * expected)


def test_cell_centres_read_their_cell_and_outside_points_read_the_border():
    torch.manual_seed(0)
    feature_map = torch.randn(2, 5, 4, 6)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    points = torch.stack([cols.flatten(), rows.flatten()], dim=1).float()[None].repeat(2, 1, 1)  # (2, 24, 2)
    out = sample_points(feature_map, points)  # (2, 24, 5)
    torch.testing.assert_close(out, feature_map.flatten(2).transpose(1, 2))
    outside = sample_points(feature_map, torch.tensor([[[-3.0, 0.0], [9.0, 3.0]]] * 2))
    torch.testing.assert_close(outside[:, 0], feature_map[:, :, 0, 0])
    torch.testing.assert_close(outside[:, 1], feature_map[:, :, 3, 5])


def test_gradients_reach_the_map_with_bilinear_weights():
    feature_map = torch.zeros(1, 1, 2, 2, requires_grad=True)
    sample_points(feature_map, torch.tensor([[[0.25, 0.5]]])).sum().backward()
    # weights: (1 - 0.25) * 0.5, 0.25 * 0.5 on each row
    torch.testing.assert_close(feature_map.grad[0, 0], torch.tensor([[0.375, 0.125], [0.375, 0.125]]))
