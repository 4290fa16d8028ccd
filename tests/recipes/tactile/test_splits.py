import pytest
from split_checks import assert_val_and_test_held_apart

from sensorium.recipes.tactile.datamodule import TactileDataModule
from sensorium.recipes.tactile.synth import generate


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tacquad")
    generate(root, seed=0, items_indoor=6, items_outdoor=3, frames=6, size=32)
    return root


def test_tactile_validates_on_val_and_tests_on_test(tiny_data):
    assert_val_and_test_held_apart(TactileDataModule(str(tiny_data), image_size=32, batch_size=4, eval_batch_size=8))
