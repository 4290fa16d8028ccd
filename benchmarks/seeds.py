"""A recipe's demo over a grid of data seeds x training seeds: how much of a result is the recipe,
and how much the draw.

    python benchmarks/seeds.py --recipe welding --data-seeds 0 1 2 --train-seeds 0 [--out DIR]
                               [--jobs 2 --threads 1] [--reuse] [-- extra demo arguments]

Each cell runs `sensorium demo RECIPE --out DIR/d<data>_t<train> --seed <data> --train-seed <train>`
in its own process (`--jobs` at a time, each with `--threads` torch threads: two one-thread runs fit
on 2 cores without the spin-waiting of two-thread runs beside each other). The data seed draws the
synthetic dataset; the training seed the initial weights, batches and augmentation. Printed: one
row per summary.json metric (nested ones flattened: ablation.video, class_iou.left_ventricle, ...)
with mean, standard deviation (n-1), min and max over the runs, then each run's wall time and
stage times. `--reuse` keeps a cell whose summary.json already exists (to add seeds to a grid).
Wall times are only comparable between runs made under the same load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def flatten(block: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) summary block under dotted names; non-numbers are left out."""
    flat = {}
    for key, value in block.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def derived(summary: dict) -> dict[str, float]:
    """A summary's numbers as one flat row: metrics.*, baseline.*, gain.* (metric minus the same
    baseline metric, the recipes' "above untrained" targets) and <per-class block>.min (the
    "every structure" targets)."""
    metrics, baseline = flatten(summary["metrics"]), flatten(summary["baseline"])
    row = {f"metrics.{k}": v for k, v in metrics.items()}
    row.update({f"baseline.{k}": v for k, v in baseline.items()})
    row.update({f"gain.{k}": metrics[k] - baseline[k] for k in metrics if k in baseline})
    for key, value in summary["metrics"].items():
        if key.startswith("class_") and isinstance(value, dict) and value:
            row[f"metrics.{key}.min"] = min(float(v or 0.0) for v in value.values())
    return row


def spread(values: list[float]) -> tuple[float, float, float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std, min(values), max(values)


def run_cell(recipe: str, out: Path, data_seed: int, train_seed: int, threads: int, extra: list[str],
             reuse: bool) -> tuple[Path, float | None]:
    summary = out / "summary.json"
    if reuse and summary.is_file():
        return out, None
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "sensorium.cli", "demo", recipe, "--out", str(out), "--seed", str(data_seed),
           "--train-seed", str(train_seed), *extra]
    start = time.perf_counter()
    with open(out / "demo.log", "w") as log:
        result = subprocess.run(cmd, check=False, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"[seeds] {out.name}: demo failed (exit {result.returncode}); see {out / 'demo.log'}", flush=True)
    else:
        print(f"[seeds] {out.name}: done in {wall:.0f} s", flush=True)
    return out, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=None, help="default: seeds_out/<recipe>")
    parser.add_argument("--jobs", type=int, default=1, help="demos run at the same time")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per demo (default: 2 // jobs, at least 1)")
    parser.add_argument("--reuse", action="store_true", help="keep cells whose summary.json exists")
    parser.add_argument("extra", nargs="*", help="after --: more arguments for every demo")
    args = parser.parse_args(argv)
    out = args.out or Path("seeds_out") / args.recipe
    threads = args.threads or max(1, 2 // args.jobs)
    cells = list(itertools.product(args.data_seeds, args.train_seeds))
    print(f"[seeds] {args.recipe}: {len(cells)} demo(s), {args.jobs} at a time, {threads} thread(s) each -> {out}",
          flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_cell(args.recipe, out / f"d{c[0]}_t{c[1]}", c[0], c[1], threads,
                                                   args.extra, args.reuse), cells))

    summaries = {}
    for path, _ in results:
        if (path / "summary.json").is_file():
            summaries[path.name] = json.loads((path / "summary.json").read_text())
    if not summaries:
        print("[seeds] no summary.json was written")
        return 1
    table: dict[str, list[float]] = {}
    per_run: dict[str, dict[str, float]] = {}
    for name, summary in summaries.items():
        row = per_run[name] = derived(summary)
        for key, value in row.items():
            table.setdefault(key, []).append(value)
    width = max(map(len, table))
    print(f"\n{args.recipe}: {len(summaries)} run(s) (data seeds {args.data_seeds}, training seeds {args.train_seeds})")
    print(f"{'metric':<{width}}  {'n':>2}  {'mean':>9}  {'std':>8}  {'min':>9}  {'max':>9}")
    for key, values in table.items():
        mean, std, lo, hi = spread(values)
        print(f"{key:<{width}}  {len(values):>2}  {mean:9.4f}  {std:8.4f}  {lo:9.4f}  {hi:9.4f}")
    headline = [k for k in table if k.startswith(("gain.", "metrics.")) and k.count(".") == 1][:4]
    headline += [k for k in table if k.endswith(".min")]
    print(f"\n{'run':<10}  {'wall s':>7}  {'demo s':>7}  " + "  ".join(headline) + "  stages")
    walls = {p.name: w for p, w in results}
    for name, summary in summaries.items():
        wall = walls.get(name)
        stages = ", ".join(f"{k} {v:.0f}" for k, v in summary.get("stages_seconds", {}).items())
        values = "  ".join(f"{per_run[name].get(k, float('nan')):>{len(k)}.4f}" for k in headline)
        print(f"{name:<10}  {wall if wall is not None else float('nan'):7.0f}  {summary['seconds']:7.0f}  "
              f"{values}  {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
