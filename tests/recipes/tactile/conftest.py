"""`mae_tiny`: the tests' TactileMAE factory (32 px, 4x4 patches of 8 px, a 2-layer 64-wide encoder);
the demo and paper sizes are the packaged YAMLs'."""

import pytest

from sensorium.recipes.tactile.model import TactileMAE

MAE_TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2,
            "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}


@pytest.fixture
def mae_tiny():
    """mae_tiny(**overrides) -> a tiny TactileMAE."""
    def build(**overrides) -> TactileMAE:
        return TactileMAE(**{**MAE_TINY, **overrides})
    return build
