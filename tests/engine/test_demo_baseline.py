"""`sensorium.engine.demo.test_untrained`: the untrained baseline runs under the fit's precision."""

import lightning as L
import torch
from helpers import toy_cli


def test_the_untrained_baseline_runs_in_the_fits_mixed_precision_on_a_cpu(tmp_path, monkeypatch):
    from sensorium.engine.demo import test_untrained

    cli = toy_cli(tmp_path, "--trainer.precision", "bf16-mixed", epochs=1)
    assert cli.trainer.precision_plugin.device == "cpu"
    seen = {}

    def record(trainer, model, datamodule=None, **kwargs):
        seen["precision"], seen["device"] = trainer.precision_plugin.precision, trainer.precision_plugin.device
        with trainer.precision_plugin.forward_context():
            seen["autocast"] = torch.is_autocast_enabled("cpu")

    monkeypatch.setattr(L.Trainer, "test", record)
    test_untrained(cli, tmp_path / "baseline")
    # given the fit's Accelerator instance, Lightning built the plugin for "cuda" and autocast was off
    assert seen == {"precision": "bf16-mixed", "device": "cpu", "autocast": True}
