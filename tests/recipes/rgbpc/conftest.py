"""A tiny rgbpc dataset for the recipe's tests: 3 tasks x 4 episodes x 10 steps of 32 x 48 frames,
256 points each, with shape8 (briefly pretrained) and vit16 packs (windows of 8, stride 2); made
once per session."""

import shutil

import pytest

from sensorium.recipes.rgbpc.encoders import ShapePretraining
from sensorium.recipes.rgbpc.extract import extract
from sensorium.recipes.rgbpc.synth import SynthConfig, generate

TINY = SynthConfig(episodes_per_task=4, steps=10, image_size=(32, 48), points=256)
TINY_PRETRAINING = ShapePretraining(views=16, steps=5, batch_size=8)
"""shape8's pretraining, shortened: the tests check the pipeline, not what shape8 learns."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbpc") / "data"
    generate(root, seed=0, config=TINY)
    extract(root / "rgb", root / "features", ["shape8", "vit16"], window=8, window_stride=2, progress=False,
            pretraining=TINY_PRETRAINING)
    return root


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private copy to break."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy
