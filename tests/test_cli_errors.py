"""Every kind of bad data or configuration that the commands check before training ends in one line,
`sensorium: error: <where>: <problem>` and exit code 2. `main` runs in-process, so an exception that
escaped it would fail the test itself; one case also runs as a user would, checking the real stderr
holds no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sensorium.cli import main
from sensorium.config import as_config
from sensorium.engine.optim import OptimConfig
from sensorium.errors import ConfigError
from sensorium.recipes.welding.synth import SynthSizes, generate

TINY = SynthSizes(video_size=32, video_frames=16, image_size=32, num_images=2, audio_seconds=0.8)


@pytest.fixture(scope="module")
def two_per_class(tmp_path_factory):
    """The new user's dataset: two runs per class (one TRAIN, one TEST after the synth's split)."""
    root = tmp_path_factory.mktemp("welding_2")
    generate(root, seed=0, samples_per_class=2, sizes=TINY)
    return root


@pytest.fixture(scope="module")
def five_per_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("welding_5")
    generate(root, seed=0, samples_per_class=5, sizes=TINY)
    return root


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sensorium: error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def test_too_few_runs_for_validation(capsys, two_per_class, tmp_path):
    line = _one_error_line(capsys, ["fit", "--config", "welding/demo", "--data.root", str(two_per_class),
                                    "--run.root", str(tmp_path)])
    assert f"{two_per_class / 'manifest.csv'}: no validation samples" in line
    assert "data.val_fraction" in line


@pytest.mark.parametrize("verb", ["fit", "doctor"])
def test_too_few_runs_for_class_balanced_batches(capsys, five_per_class, tmp_path, verb):
    line = _one_error_line(capsys, [verb, "--config", "welding/demo", "--data.root", str(five_per_class),
                                    "--run.root", str(tmp_path)])
    assert f"{five_per_class / 'manifest.csv'}: the training runs (24 of TRAIN after carving 12" in line
    assert "data.samples_per_class: classes with fewer than samples_per_class=4 samples" in line


def test_the_command_prints_one_line_and_no_traceback(five_per_class, tmp_path):
    sensorium = os.path.join(os.path.dirname(sys.executable), "sensorium")
    result = subprocess.run([sensorium, "fit", "--config", "welding/demo", "--data.root", str(five_per_class),
                             "--run.root", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Tip:" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(f"sensorium: error: {five_per_class}/manifest.csv")


def test_a_missing_data_root(capsys, tmp_path):
    line = _one_error_line(capsys, ["fit", "--config", "welding/demo", "--data.root", str(tmp_path / "nowhere"),
                                    "--run.root", str(tmp_path)])
    assert "nowhere/manifest.csv: data root" in line and "does not exist" in line


def test_a_value_the_model_rejects_names_the_config(capsys, five_per_class, tmp_path):
    line = _one_error_line(capsys, ["fit", "--config", "welding/demo", "--data.root", str(five_per_class),
                                    "--model.net.fusion_heads", "7", "--run.root", str(tmp_path)])
    assert line == ("sensorium: error: welding/demo: cannot build the run from this configuration: "
                    "dim 96 is not divisible by num_heads 7")


def test_an_unknown_logger(capsys, five_per_class, tmp_path):
    line = _one_error_line(capsys, ["fit", "--config", "welding/demo", "--data.root", str(five_per_class),
                                    "--run.loggers", "[csv, mlflow]", "--run.root", str(tmp_path)])
    assert "run.loggers: unknown logger(s) ['mlflow']" in line


def test_an_unknown_config_name(capsys):
    line = _one_error_line(capsys, ["fit", "--config", "welding/paperr"])
    assert "welding/paperr: no such config file, and no packaged config of that name" in line


def test_demo_checks_its_config_before_synthesising(capsys, tmp_path):
    line = _one_error_line(capsys, ["demo", "welding", "--out", str(tmp_path), "--config", "nope.yaml"])
    assert "nope.yaml: no such config file" in line
    assert not (tmp_path / "data").exists()


def test_eval_without_a_checkpoint_or_its_config(capsys, tmp_path):
    line = _one_error_line(capsys, ["eval", "knn", "--ckpt", str(tmp_path / "best.ckpt")])
    assert line.endswith("best.ckpt: no such checkpoint")
    stray = tmp_path / "stray.ckpt"
    stray.write_bytes(b"")
    line = _one_error_line(capsys, ["eval", "cardiac", "--ckpt", str(stray)])
    assert "stray.ckpt: no config.yaml beside its run directory: pass --config" in line


def test_synth_rejects_a_value_it_cannot_generate(capsys, tmp_path):
    line = _one_error_line(capsys, ["synth", "tactile", "--out", str(tmp_path), "--frames", "3"])
    assert "frames: a recording needs at least 4 frames" in line


def test_prepare_without_volumes(capsys, tmp_path):
    line = _one_error_line(capsys, ["prepare", "cardiac", "--input", str(tmp_path), "--out", str(tmp_path / "p")])
    assert line.endswith(f"{tmp_path}: no .nii.gz or .nii files")


def test_report_and_compare_of_missing_runs(capsys, tmp_path):
    assert _one_error_line(capsys, ["report", str(tmp_path / "run")]).endswith("run: no such run directory")
    line = _one_error_line(capsys, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", "x.html"])
    assert line.endswith("a: no such run directory")


def test_unknown_recipe_and_verb(capsys):
    from sensorium.recipes import RECIPES

    known = ", ".join(sorted(RECIPES))  # the registry's recipes, however many there are
    assert f"unknown recipe; known: {known}" in _one_error_line(capsys, ["synth", "weld"])
    assert "unknown command 'fitt'" in _one_error_line(capsys, ["fitt"])
    assert "recipe 'welding' has no prepare step" in _one_error_line(capsys, ["prepare", "welding"])


def test_a_config_block_with_a_field_that_does_not_exist():
    with pytest.raises(ConfigError, match=r"OptimConfig: no field\(s\) \['learning_rate'\]; its fields: lr, "):
        as_config(OptimConfig, {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="OptimConfig: expected a mapping of its fields, got float"):
        as_config(OptimConfig, 1e-3)
