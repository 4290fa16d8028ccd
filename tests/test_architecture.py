"""The import contracts of pyproject.toml hold, and they cover every registered recipe."""

import subprocess
import sys
import tomllib
from pathlib import Path

from sensorium.recipes import RECIPES

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _contract(kind: str) -> dict:
    return next(c for c in CONTRACTS if c["type"] == kind)


def test_the_contracts_name_every_recipe():
    packages = {f"sensorium.recipes.{name}" for name in RECIPES}
    assert set(_contract("independence")["modules"]) == packages
    assert set(_contract("forbidden")["forbidden_modules"]) == packages
    assert set(_contract("layers")["layers"][0].split(" | ")) == packages


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout


RECIPE_SOURCES = sorted((REPO / "src" / "sensorium" / "recipes").glob("*/*.py"))


def test_no_recipe_shards_its_own_loaders_or_probes_its_datamodule():
    """Loader sharding lives in sensorium.data.datamodule once; tasks receive the typed DataSpec
    (configure_data) instead of reaching into their datamodule."""
    forbidden = ("DistributedSampler", "rank_shard", "trainer.datamodule", "hasattr(datamodule",
                 "getattr(datamodule", "datamodule.setup(", "L.LightningDataModule")
    found = [f"{path.relative_to(REPO)}: {needle}" for path in RECIPE_SOURCES for needle in forbidden
             if needle in path.read_text()]
    assert RECIPE_SOURCES and not found, found
