"""The recipes, and RECIPES: the one registry of them.

Each recipe is a package, `sensorium/recipes/<name>/`, holding everything only that recipe uses,
named by role: `reader.py` (its on-disk layout), `datamodule.py`, `synth.py`, `task.py` (its
LightningModule), `evaluate.py`, `report.py`, `demo.py`, and `configs/*.yaml` (package data, each
opening with its launch command). A new recipe is a new package and one entry below.

The registry names entry points as module paths: `import sensorium.recipes` imports no recipe,
and a command imports only the module of the verb it runs (a verb that does not train never
imports Lightning). This is the only place a recipe's module is named for import; the import
contracts in pyproject.toml keep the shared library from importing a recipe in any other way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sensorium.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    name: str
    commands: Mapping[str, str]
    """verb -> module whose `main(argv) -> int` runs `sensorium <verb> <recipe> ...` (synth, prepare,
    eval, demo, and for later recipes extract, verify, embed, sample, pipeline)."""
    report: str | None = None
    """Module whose `sections(run_dir) -> list[Section]` adds the recipe's part of report.html."""
    aliases: tuple[str, ...] = field(default=())
    """Other names `sensorium eval` accepts for this recipe (welding's k-NN protocol: `knn`)."""

    @property
    def configs(self) -> Path:
        """The directory of the recipe's packaged YAMLs (installed with the wheel)."""
        return PACKAGE_DIR / self.name / "configs"


def _recipe(name: str, commands: dict[str, str], report: bool = True, aliases: tuple[str, ...] = ()) -> Recipe:
    package = f"sensorium.recipes.{name}"
    return Recipe(name, {verb: f"{package}.{module}" for verb, module in commands.items()},
                  f"{package}.report" if report else None, aliases)


RECIPES: dict[str, Recipe] = {
    "welding": _recipe("welding", {"synth": "synth", "eval": "evaluate", "demo": "demo"}, aliases=("knn",)),
    "tactile": _recipe("tactile", {"synth": "synth", "eval": "evaluate", "demo": "demo"}),
    "cardiac": _recipe("cardiac", {"synth": "synth", "prepare": "prepare", "eval": "evaluate", "demo": "demo"}),
    "rgbpc": _recipe("rgbpc", {"synth": "synth", "prepare": "prepare", "extract": "extract", "verify": "verify",
                               "eval": "evaluate", "embed": "embed", "demo": "demo"}),
    "doppler": _recipe("doppler", {"synth": "synth", "prepare": "prepare", "extract": "extract",
                                   "sample": "sample", "pipeline": "pipeline", "eval": "evaluate",
                                   "demo": "demo"}),
}


def recipe(name: str) -> Recipe:
    """The recipe called `name` (or one of its aliases)."""
    for candidate in RECIPES.values():
        if name == candidate.name or name in candidate.aliases:
            return candidate
    raise ConfigError(name, f"unknown recipe; known: {', '.join(sorted(RECIPES))}")


# --- packaged configs ----------------------------------------------------------------------------
def packaged_configs() -> dict[str, Path]:
    """Every packaged YAML by its name, `<recipe>/<config>` (e.g. `welding/demo`), sorted."""
    found = {f"{r.name}/{path.stem}": path for r in RECIPES.values() for path in r.configs.glob("*.yaml")}
    return dict(sorted(found.items()))


def resolve_config(value: str | Path) -> Path:
    """A `--config` value -> the YAML file: an existing path as given, else a packaged name such as
    `welding/demo` (or `welding/demo.yaml`). Anything else is a ConfigError naming what exists."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    name = str(value).removesuffix(".yaml")
    configs = packaged_configs()
    if name in configs:
        return configs[name]
    raise ConfigError(value, f"no such config file, and no packaged config of that name (packaged: "
                             f"{', '.join(configs)})")
