"""Every packaged YAML parses against the code's signatures and opens with its launch command; the
packaged names resolve without installing anything, and the built wheel carries every YAML."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sensorium.errors import ConfigError
from sensorium.recipes import RECIPES, packaged_configs, resolve_config

CONFIGS = packaged_configs()
REPO = Path(__file__).resolve().parents[2]


def test_every_recipe_packages_a_demo_and_a_paper_config():
    for name in RECIPES:
        assert {f"{name}/demo", f"{name}/paper"} <= set(CONFIGS), name


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses(name, capsys):
    from sensorium.engine.lightning_cli import SensoriumCLI

    with pytest.raises(SystemExit) as exit_info:  # --print_config parses and validates, then exits
        SensoriumCLI(args=["fit", "--config", name, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    recipe = name.split("/")[0]
    # task.py, or a second task's own file (distil_task.py, dit_task.py)
    assert re.search(rf"class_path: sensorium\.recipes\.{recipe}\.(\w+_)?task\.", printed)
    assert f"class_path: sensorium.recipes.{recipe}.datamodule." in printed


@pytest.mark.parametrize("name", CONFIGS)
def test_config_opens_with_its_launch_command(name):
    first = CONFIGS[name].read_text().splitlines()[0]
    assert first.startswith("# sensorium ") and f"--config {name} " in first + " "


@pytest.mark.parametrize("name", CONFIGS)
def test_packaged_names_resolve_with_or_without_the_suffix(name):
    assert resolve_config(name) == CONFIGS[name] == resolve_config(f"{name}.yaml")
    assert CONFIGS[name].is_file()


def test_a_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    (tmp_path / "welding").mkdir()
    local = tmp_path / "welding" / "demo.yaml"
    local.write_text("# mine\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config("welding/demo.yaml") == Path("welding/demo.yaml")
    assert resolve_config("welding/demo") == CONFIGS["welding/demo"]


def test_an_unknown_config_names_what_exists():
    with pytest.raises(ConfigError, match=r"welding/dmeo: no such config file.*welding/demo"):
        resolve_config("welding/dmeo")


def test_configs_command_lists_and_copies(tmp_path, capsys):
    from sensorium.cli import main

    assert main(["configs"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == len(CONFIGS)
    assert any(line.startswith("welding/demo ") and "# sensorium fit --config welding/demo" in line
               for line in listing)
    assert main(["configs", "cardiac/paper", "--out", str(tmp_path)]) == 0
    copy = tmp_path / "cardiac_paper.yaml"
    assert copy.read_text() == CONFIGS["cardiac/paper"].read_text()
    assert main(["configs", "cardiac/paper", "--out", str(copy)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["configs", "nope/demo"]) == 2


@pytest.mark.slow
def test_the_wheel_ships_every_packaged_config(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sensorium-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, path in CONFIGS.items():
        recipe, config = name.split("/")
        assert f"sensorium/recipes/{recipe}/configs/{config}.yaml" in names, name
