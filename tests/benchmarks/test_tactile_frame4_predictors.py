"""benchmarks/tactile_frame4_predictors.py: its predictors by hand, and the script on tiny synthetic
data (every predictor against copying frame 3, sliding and pressed-in-place contacts apart)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from sensorium.recipes.tactile.synth import generate

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tactile_frame4_predictors.py"


def _load():
    spec = importlib.util.spec_from_file_location("tactile_frame4_predictors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


predictors_script = _load()


def test_predictors_by_hand():
    still = torch.rand(1, 1, 3, 16, 16).expand(2, 4, -1, -1, -1)  # four identical frames
    target, predicted = predictors_script.predictors(still)
    for prediction in predicted.values():  # every predictor is exact on a still sequence
        torch.testing.assert_close(prediction, target)
    ramp = torch.rand(1, 3, 16, 16) * torch.arange(1.0, 5.0).view(4, 1, 1, 1) + torch.rand(1, 3, 16, 16)
    target, predicted = predictors_script.predictors(ramp[None])
    # a linear ramp in pixels stays linear after the per-channel normalisation but not after the
    # per-patch one: extrapolation is exact only in pixel space, so only check it beats averaging
    errors = {name: float((p - target).pow(2).mean()) for name, p in predicted.items()}
    assert errors["2 x frame 3 - frame 2"] < errors["mean of frames 1-3"]


def test_the_script_scores_every_predictor_against_copying(tmp_path, capsys):
    generate(tmp_path, seed=0, items_indoor=6, items_outdoor=3, frames=6, size=32)
    ratios = predictors_script.main([str(tmp_path), "--split", "test", "--image-size", "32"])
    assert ratios["copy frame 3"]["sliding"] == pytest.approx(1.0)
    assert set(ratios) == {"copy frame 3", "mean of frames 2, 3", "mean of frames 1-3", "2 x frame 3 - frame 2"}
    assert "pressed in place" in capsys.readouterr().out
