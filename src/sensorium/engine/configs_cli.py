"""`sensorium configs [NAME] [--out FILE] [--force]`: the YAMLs that ship inside the package.

Without NAME, lists every packaged config (`<recipe>/<name>`, usable as `--config welding/demo`)
with its first line, the command that launches it. With NAME, prints that YAML, or with `--out`
writes an editable copy (a directory gets `<recipe>_<name>.yaml`) to pass as `--config FILE`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensorium.engine.checkpoint import atomic_write_text
from sensorium.errors import ConfigError


def main(argv: list[str]) -> int:
    from sensorium.recipes import packaged_configs

    parser = argparse.ArgumentParser(prog="sensorium configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a packaged config, e.g. welding/demo")
    parser.add_argument("--out", type=Path, help="write an editable copy here (a file, or a directory)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)

    configs = packaged_configs()
    if args.name is None:
        width = max(map(len, configs))
        for name, path in configs.items():
            print(f"{name:<{width}}  {path.read_text().splitlines()[0]}")
        return 0
    name = args.name.removesuffix(".yaml")
    if name not in configs:
        raise ConfigError(args.name, f"no packaged config of that name (packaged: {', '.join(configs)})")
    source = configs[name]
    text = source.read_text()
    if args.out is None:
        print(text, end="")
        return 0
    out = args.out / f"{name.replace('/', '_')}.yaml" if args.out.is_dir() else args.out
    if out.exists() and not args.force:
        raise ConfigError(out, "already exists; pass --force to overwrite it")
    atomic_write_text(out, text)
    print(f"[configs] wrote {out} (a copy of {args.name}); run it with --config {out}")
    return 0
