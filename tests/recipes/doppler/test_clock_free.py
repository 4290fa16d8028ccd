"""The doppler demo's fits are clock-free: they run a fixed number of optimiser steps, so a loaded
machine (here every step made slower) gives the same weights, only later."""

import pytest
import torch
from safetensors.torch import load_file

from sensorium.recipes.doppler.pipeline import Pipeline, PipelineConfig
from sensorium.recipes.doppler.synth import generate


def _fit(raw, out, *extra):
    steps = ["--trainer.max_epochs", "-1", "--trainer.enable_progress_bar", "false", *extra]
    config = PipelineConfig(raw, out, vae_overrides=["--trainer.max_steps", "12", *steps],
                            dit_overrides=["--trainer.max_steps", "6", *steps])
    pipeline = Pipeline(config, log=lambda line: None)
    pipeline.run(stop_after="dit")
    return config


@pytest.mark.slow
def test_a_slower_machine_ends_at_the_same_weights(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, users=4, per_user=30, seed=0)
    quick = _fit(raw, tmp_path / "quick")
    slow = _fit(raw, tmp_path / "slow", "--trainer.callbacks+=toy_recipe.SlowSteps")
    for stage in ("vae", "dit"):
        a, b = (load_file(c.run_dir(stage) / "export" / "model.safetensors") for c in (quick, slow))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"the {stage} weights differ on a slower machine"
