"""Every recipe YAML parses against the code's signatures and opens with its launch command."""

from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CONFIGS = sorted(RECIPES.glob("*/*.yaml"))


def test_there_are_recipe_configs():
    assert {p.parent.name for p in CONFIGS} >= {"welding"}


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.name}" for p in CONFIGS])
def test_config_parses(config, capsys):
    from sensorium.engine.lightning_cli import SensoriumCLI

    with pytest.raises(SystemExit) as exit_info:  # --print_config parses and validates, then exits
        SensoriumCLI(args=["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: sensorium.tasks." in printed and "class_path: sensorium.data." in printed


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.name}" for p in CONFIGS])
def test_config_opens_with_its_launch_command(config):
    first = config.read_text().splitlines()[0]
    assert first.startswith("# sensorium ") and str(config.relative_to(RECIPES.parent)) in first
