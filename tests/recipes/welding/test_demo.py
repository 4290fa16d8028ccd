"""`sensorium demo welding` end to end at tiny scale: summary.json fits the DESIGN.md contract and
records the data and training seeds it ran with."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensorium.cli import main

CHECKER = Path(__file__).resolve().parents[4] / "shared" / "tools" / "check_summary.py"

@pytest.mark.slow
def test_demo_writes_a_summary_with_both_seeds(tmp_path, tiny_config):
    out = tmp_path / "demo"
    assert main(["demo", "welding", "--out", str(out), "--samples-per-class", "9", "--seed", "3",
                 "--train-seed", "7", "--config", str(tmp_path / "welding_demo.yaml")]) == 2  # no such file
    assert main(["demo", "welding", "--out", str(out), "--samples-per-class", "9", "--seed", "3",
                 "--train-seed", "7", "--", "--config", str(tiny_config)]) == 0  # welding/demo, then the tiny sizes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "welding"
    assert (summary["data_seed"], summary["train_seed"]) == (3, 7)
    assert set(summary["stages_seconds"]) == {"synth", "fit", "eval", "report"}
    assert 0.0 <= summary["metrics"]["knn_accuracy"] <= 1.0
    field = {"auroc_mean", "auroc", "binary_f1", "ece", "challenge_score"}  # DESIGN.md's field metrics
    assert field <= set(summary["metrics"]) and {"auroc_mean", "challenge_score"} <= set(summary["baseline"])
    eval_report = json.loads((Path(summary["run_dir"]) / "eval" / "knn.json").read_text())
    assert all(summary["metrics"][key] == eval_report[key] for key in field)
    if CHECKER.is_file():  # the contract's own checker, where the shared tools sit beside the checkout
        # --strict: the field metrics are required; welding has them all.
        result = subprocess.run([sys.executable, str(CHECKER), "--strict", str(out / "summary.json")],
                                check=False, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
