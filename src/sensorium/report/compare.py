"""`sensorium compare RUN_DIR [RUN_DIR ...] [--out compare.html]`: one self-contained HTML page
comparing runs: a table of final training losses and evaluation metrics, and their curves overlaid.

Numbers come from each run's metrics.csv (last value of every epoch-level train/ and val/ metric)
and from the flat numeric entries of its eval/*.json files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sensorium.engine.checkpoint import atomic_write_text
from sensorium.errors import ConfigError
from sensorium.report.curves import overlay_png, read_metrics
from sensorium.report.html import Section, page


def final_values(run_dir: Path) -> dict[str, float]:
    """Last value of each epoch-level metric, plus numeric entries of eval/*.json (one level deep)."""
    values: dict[str, float] = {}
    metrics_path = run_dir / "metrics.csv"
    if metrics_path.is_file():
        for key, (_, ys) in read_metrics(metrics_path).items():
            if key.startswith(("train/", "val/", "test/")) and not key.endswith("_step"):
                values[key] = float(ys[-1])
    for path in sorted((run_dir / "eval").glob("*.json")):
        data = json.loads(path.read_text())
        for key, value in _flatten(data).items():
            values[f"{path.stem}/{key}"] = value
    return values


def _flatten(data: dict, prefix: str = "", depth: int = 0) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict) and depth < 1:
            out.update(_flatten(value, f"{name}.", depth + 1))
    return out


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    names = _names(run_dirs)
    finals = {name: final_values(d) for name, d in zip(names, run_dirs)}
    keys = sorted(set().union(*finals.values()))
    table = Section("Final values")
    table.table(["metric", *names], [[k, *[finals[n].get(k, "") for n in names]] for k in keys])
    curves = Section("Curves")
    series = {name: read_metrics(d / "metrics.csv") for name, d in zip(names, run_dirs) if (d / "metrics.csv").is_file()}
    shared = sorted(set().union(*[set(m) for m in series.values()])) if series else []
    for key in [k for k in shared if not k.startswith(("lr-", "epoch"))]:
        png = overlay_png(series, key)
        if png is not None:
            curves.image(png, key)
    html = page("sensorium · comparison", [table, curves], subtitle=" | ".join(str(d) for d in run_dirs))
    path = atomic_write_text(out, html)
    print(f"[compare] wrote {path} ({len(run_dirs)} runs, {len(keys)} metrics)")
    return path


def _names(run_dirs: list[Path]) -> list[str]:
    """Shortest distinguishing names: the run directory name, prefixed by its parents while ambiguous."""
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{d.parent.name}/{d.name}" for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium compare", description=__doc__)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("compare.html"))
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not d.is_dir()]
    if missing:
        raise ConfigError(missing[0], "no such run directory")
    write_comparison(args.run_dirs, args.out)
    return 0
