"""The `sensorium` command.

    sensorium fit|validate|test --config recipes/<recipe>/demo.yaml [--data.root DIR] [...]
    sensorium synth <recipe> --out DIR [--seed S] [...]     write synthetic data in the real layout
    sensorium prepare <recipe> --input DIR --out DIR        turn raw files into training samples
    sensorium eval <recipe|knn> --ckpt PATH [...]           evaluate a checkpoint into RUN/eval/
    sensorium demo <recipe> --out DIR                       synth -> fit -> eval -> report
    sensorium report RUN_DIR                                write RUN_DIR/report.html
    sensorium compare RUN_DIR [RUN_DIR ...] --out FILE      one HTML page comparing runs
    sensorium doctor --config YAML [...]                    the doctor's checks on a few batches

fit/validate/test go to LightningCLI; every other verb dispatches to a module's `main(argv)`, so a
verb that does not train never imports Lightning (about 5 s).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Recipe:
    synth: str  # module with main(argv): writes the recipe's real on-disk layout
    eval: str  # module with main(argv): evaluates a checkpoint, writes RUN/eval/<name>.json
    demo: str  # module with main(argv): synth -> (prepare) -> fit -> eval -> report -> summary.json
    prepare: str | None = None  # module with main(argv), for layouts that need a preparation pass


RECIPES: dict[str, Recipe] = {
    "welding": Recipe(
        synth="sensorium.synth.welding",
        eval="sensorium.eval.welding",
        demo="sensorium.demo.welding",
    ),
    "tactile": Recipe(
        synth="sensorium.synth.tactile",
        eval="sensorium.eval.tactile",
        demo="sensorium.demo.tactile",
    ),
    "cardiac": Recipe(
        synth="sensorium.synth.cardiac",
        eval="sensorium.eval.cardiac",
        demo="sensorium.demo.cardiac",
        prepare="sensorium.data.cardiac_prepare",
    ),
}

# `sensorium eval knn` is the welding recipe's k-NN protocol under its own name.
EVAL_ALIASES = {"knn": "welding"}

LIGHTNING_VERBS = ("fit", "validate", "test")
USAGE = __doc__.strip()


class UsageError(Exception):
    """A command line that cannot be run; its message is printed without a traceback."""


def _recipe(name: str) -> Recipe:
    name = EVAL_ALIASES.get(name, name)
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _dispatch(module: str, argv: list[str]) -> int:
    return int(import_module(module).main(argv) or 0)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in LIGHTNING_VERBS:
        from sensorium.engine.lightning_cli import run_lightning

        return run_lightning(argv)
    if verb == "doctor":
        return _dispatch("sensorium.engine.doctor_cli", rest)
    if verb in ("report", "compare"):
        return _dispatch(f"sensorium.report.{verb}", rest)
    if verb in ("synth", "eval", "demo", "prepare"):
        if not rest or rest[0].startswith("-"):
            raise UsageError(f"usage: sensorium {verb} <recipe> ...; recipes: {', '.join(sorted(RECIPES))}")
        recipe = _recipe(rest[0])
        module = getattr(recipe, verb)
        if module is None:
            raise UsageError(f"recipe {rest[0]!r} has no {verb} step")
        return _dispatch(module, rest[1:])
    raise UsageError(f"unknown command {verb!r}\n\n{USAGE}")


def main(argv: list[str] | None = None) -> int:
    from sensorium.errors import SensoriumError, user_message

    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (UsageError, SensoriumError, FileNotFoundError) as e:
        print(f"sensorium: error: {user_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
