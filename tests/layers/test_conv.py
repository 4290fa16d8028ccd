"""CoordConv channels: the features are kept and each position gets its normalised column and row."""

import torch

from sensorium.layers.conv import with_coordinates


def test_with_coordinates_appends_column_and_row_in_minus_one_to_one():
    x = torch.randn(2, 3, 4, 5)
    out = with_coordinates(x)
    assert out.shape == (2, 5, 4, 5)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[0, 3, 0], torch.linspace(-1, 1, 5))  # column, along a row
    torch.testing.assert_close(out[1, 4, :, 2], torch.linspace(-1, 1, 4))  # row, down a column
    assert out[0, 3, 0, 0] == -1 and out[0, 4, -1, -1] == 1
