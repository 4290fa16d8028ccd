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


def test_demo_overrides_reach_the_fit_in_their_order(tmp_path):
    """`--flag value` overrides keep their values beside their flags, with the known demo flags
    anywhere among them (a positional for the overrides once took the values away from the flags)."""
    from sensorium.engine.demo import demo_parser, parse_demo_args

    parser = demo_parser("tactile", None)
    args, overrides = parse_demo_args(parser, [
        "--out", str(tmp_path / "out"), "--model.init_args.model.motion_cue", "true", "--seed", "3",
        "--trainer.max_epochs=2", "--model.init_args.model.dynamic_mask_ratio", "0.25", "--train-seed", "1"])
    assert args.seed == 3 and args.train_seed == 1 and (tmp_path / "out").is_dir()
    assert overrides == ["--seed_everything", "1", "--model.init_args.model.motion_cue", "true",
                         "--trainer.max_epochs=2", "--model.init_args.model.dynamic_mask_ratio", "0.25"]
    # a "--" separator before the overrides is dropped, not passed to the fit
    _, overrides = parse_demo_args(parser, ["--out", str(tmp_path / "out"), "--", "--config", "extra.yaml"])
    assert overrides == ["--config", "extra.yaml"]
