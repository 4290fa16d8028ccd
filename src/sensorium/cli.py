"""The `sensorium` command.

    sensorium fit|validate|test --config welding/demo [--data.root DIR] [...]
    sensorium configs [NAME [--out FILE]]                  list packaged configs, or write an editable copy
    sensorium synth <recipe> --out DIR [--seed S] [...]     write synthetic data in the real layout
    sensorium prepare <recipe> --input DIR --out DIR        turn raw files into training samples
    sensorium extract <recipe> ...                          frozen encoders -> feature packs (rgbpc),
                                                            VAE -> latents (doppler)
    sensorium verify <recipe> DIR                           check a dataset and its packs (rgbpc)
    sensorium embed <recipe> --ckpt DIR --frames DIR --out DIR   features from a distilled model (rgbpc)
    sensorium sample <recipe> --ckpt PATH --out DIR [...]   generated data in the real layout (doppler)
    sensorium pipeline <recipe> --data DIR --out DIR        the stages in order, reusing finished ones (doppler)
    sensorium eval <recipe|knn> --ckpt PATH [...]           evaluate a checkpoint into RUN/eval/
    sensorium demo <recipe> --out DIR                       synth -> fit -> eval -> report
    sensorium report RUN_DIR                                write RUN_DIR/report.html
    sensorium compare RUN_DIR [RUN_DIR ...] --out FILE      one HTML page comparing runs
    sensorium doctor --config welding/demo [...]            the doctor's checks on a few batches

`--config` takes a YAML path or a packaged name (`sensorium configs` lists them). fit/validate/test
go to LightningCLI; every other verb dispatches to a module's `main(argv)`, so a verb that does not
train never imports Lightning (about 5 s).
"""

from __future__ import annotations

import sys
from importlib import import_module

LIGHTNING_VERBS = ("fit", "validate", "test")
SHARED_VERBS = {
    "doctor": "sensorium.engine.doctor_cli",
    "report": "sensorium.report.report",
    "compare": "sensorium.report.compare",
    "configs": "sensorium.engine.configs_cli",
}
USAGE = __doc__.strip()


class UsageError(Exception):
    """A command line that cannot be run; its message is printed without a traceback."""


def _dispatch(module: str, argv: list[str]) -> int:
    return int(import_module(module).main(argv) or 0)


def run(argv: list[str]) -> int:
    from sensorium.recipes import RECIPES, recipe

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in LIGHTNING_VERBS:
        from sensorium.engine.lightning_cli import run_lightning

        return run_lightning(argv)
    if verb in SHARED_VERBS:
        return _dispatch(SHARED_VERBS[verb], rest)
    recipe_verbs = sorted({v for r in RECIPES.values() for v in r.commands})
    if verb in recipe_verbs:
        if not rest or rest[0].startswith("-"):
            having = sorted(r.name for r in RECIPES.values() if verb in r.commands)
            raise UsageError(f"usage: sensorium {verb} <recipe> ...; recipes: {', '.join(having)}")
        chosen = recipe(rest[0])
        if verb not in chosen.commands:
            raise UsageError(f"recipe {chosen.name!r} has no {verb} step")
        return _dispatch(chosen.commands[verb], rest[1:])
    raise UsageError(f"unknown command {verb!r}\n\n{USAGE}")


def main(argv: list[str] | None = None) -> int:
    from sensorium import log
    from sensorium.errors import SensoriumError, user_message

    log.setup()
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (UsageError, SensoriumError, FileNotFoundError) as e:
        print(f"sensorium: error: {user_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
