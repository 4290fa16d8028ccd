"""Results tables of the documentation, generated from demo summaries (never typed by hand).

Reads `docs/results/<recipe>/*.json` (each a `sensorium demo <recipe> --out DIR` summary.json,
format in DESIGN.md: {"recipe", "seconds", "metrics": {...}, "baseline": {...}, "data_seed",
"train_seed", "stages_seconds"}) and writes `docs/recipes/_results_<recipe>.md`: one row per run
(data seed, train seed, the recipe's headline metrics, its baseline, seconds), and a mean ± std row
(sample std, as benchmarks/seeds.py prints it) when there are several runs, after one for each
training seed when the runs have several. The recipe pages include these files (pymdownx.snippets).

    python docs/gen_results.py                        # docs/results -> docs/recipes
    python docs/gen_results.py --results DIR --out DIR

It is also the mkdocs hook named in mkdocs.yml: `on_pre_build` regenerates the tables on every
build, and a file is rewritten only when its content changes (so `mkdocs serve` does not loop).
Only json and pathlib: it must run without the toolkit's dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

DOCS = Path(__file__).resolve().parent

Getter = Callable[[dict], object]


class Column(NamedTuple):
    header: str
    get: Getter
    digits: int
    signed: bool = False  # a difference: printed with its sign


def _at(section: str, *keys: str) -> Getter:
    """summary[section][k0][k1]...; None when any level is missing."""
    def get(summary: dict) -> object:
        value: object = summary.get(section)
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value
    return get


def _min_of(section: str, key: str) -> Getter:
    """The smallest value of a {name: value} metric (e.g. the lowest structure's IoU)."""
    def get(summary: dict) -> object:
        values = _at(section, key)(summary)
        if not isinstance(values, dict):
            return None
        numbers = [v for v in values.values() if _is_number(v)]
        return min(numbers) if numbers else None
    return get


def _gain(key: str) -> Getter:
    """metrics[key] - baseline[key]."""
    def get(summary: dict) -> object:
        trained, untrained = _at("metrics", key)(summary), _at("baseline", key)(summary)
        return trained - untrained if _is_number(trained) and _is_number(untrained) else None
    return get


# The headline columns per recipe (DESIGN.md's `metrics` / `baseline` table).
COLUMNS: dict[str, list[Column]] = {
    "welding": [
        Column("TEST k-NN accuracy", _at("metrics", "knn_accuracy"), 3),
        Column("macro F1", _at("metrics", "f1_macro"), 3),
        Column("untrained k-NN (baseline)", _at("baseline", "knn_accuracy"), 3),
        Column("gain", _gain("knn_accuracy"), 3, signed=True),
        Column("sensor alone", _at("metrics", "ablation", "sensor"), 3),
        Column("video alone", _at("metrics", "ablation", "video"), 3),
        Column("mean AUROC", _at("metrics", "auroc_mean"), 3),
        Column("binary F1", _at("metrics", "binary_f1"), 3),
        Column("ECE", _at("metrics", "ece"), 3),
        Column("challenge score", _at("metrics", "challenge_score"), 3),
    ],
    "tactile": [
        Column("frame-4 MSE / copy frame 3", _at("metrics", "pred_mse_ratio"), 3),
        Column("masked PSNR (dB)", _at("metrics", "psnr_masked"), 2),
        Column("k-NN accuracy", _at("metrics", "knn_accuracy"), 3),
        Column("untrained k-NN (baseline)", _at("baseline", "knn_accuracy"), 3),
        Column("k-NN gain", _gain("knn_accuracy"), 3, signed=True),
        Column("force R²", _at("metrics", "force_r2"), 3),
        Column("contact error (mm)", _at("metrics", "contact_mm"), 2),
        Column("slip F1", _at("metrics", "slip_f1"), 3),
    ],
    "cardiac": [
        Column("mean IoU", _at("metrics", "mean_iou"), 3),
        Column("lowest structure IoU", _min_of("metrics", "class_iou"), 3),
        Column("Chamfer (normalised)", _at("metrics", "chamfer"), 4),
        Column("baseline mean IoU", _at("baseline", "mean_iou"), 3),
        Column("mean Dice", _at("metrics", "mean_dice"), 3),
        Column("mean HD95 (mm)", _at("metrics", "mean_hd95_mm"), 2),
        Column("mean ASSD (mm)", _at("metrics", "mean_assd_mm"), 2),
        Column("overlap (mL)", _at("metrics", "overlap_ml"), 1),
        Column("gap (mL)", _at("metrics", "gap_ml"), 1),
    ],
    "rgbpc": [
        Column("point -> patch top-1", _at("metrics", "point_top1"), 3),
        Column("chance top-1", _at("metrics", "chance_top1"), 4),
        Column("set top-1", _at("metrics", "set_top1"), 3),
        Column("untrained top-1 (baseline)", _at("baseline", "point_top1"), 4),
        Column("action error (a) point cloud", _at("metrics", "action_error", "pc"), 3),
        Column("(b) aligned RGB", _at("metrics", "action_error", "rgb_aligned"), 3),
        Column("(c) raw RGB", _at("metrics", "action_error", "rgb_raw"), 3),
        Column("(d) student", _at("metrics", "action_error", "student"), 3),
        Column("gap closed (b)", _at("metrics", "gap_closed"), 3),
        Column("student gap closed (d)", _at("metrics", "student_gap_closed"), 3),
        Column("action heads", _at("metrics_more", "action_seeds"), 0),
        Column("(d) per head, std", _at("metrics_more", "student_gap_closed_per_head", "std"), 3),
    ],
    "doppler": [
        Column("conditioning fidelity", _at("metrics", "cond_fidelity"), 3),
        Column("CAS", _at("metrics", "cas"), 3),
        Column("FD", _at("metrics", "fd"), 2),
        Column("FD floor", _at("metrics", "fd_floor"), 2),
        Column("aug. gain, generated", _at("metrics", "aug_gain", "generated", "mean"), 3, signed=True),
        Column("aug. gain, classic", _at("metrics", "aug_gain", "classic", "mean"), 3, signed=True),
        Column("TRTS", _at("metrics", "trts"), 3),
        Column("untrained fidelity (baseline)", _at("baseline", "cond_fidelity"), 3),
        Column("untrained FD (baseline)", _at("baseline", "fd"), 2),
    ],
}
RECIPES = tuple(COLUMNS)
MISSING = "–"
NONE_YET = "no summary.json committed yet"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: object, digits: int, signed: bool = False) -> str:
    if _is_number(value):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return MISSING if value is None else str(value)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def load(results: Path, recipe: str) -> list[tuple[str, dict]]:
    """(file name, summary) for every JSON file of the recipe, sorted by data seed, train seed, name."""
    runs = []
    for path in sorted((results / recipe).glob("*.json")):
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}: not valid JSON ({err})") from err
        if not isinstance(summary, dict):
            raise SystemExit(f"{path}: a summary.json is a JSON object, got {type(summary).__name__}")
        if summary.get("recipe", recipe) != recipe:
            raise SystemExit(f"{path}: a {summary['recipe']!r} summary in the {recipe!r} folder")
        runs.append((path.name, summary))

    def order(run: tuple[str, dict]) -> tuple:
        name, summary = run
        seeds = [summary.get(k) for k in ("data_seed", "train_seed")]
        return tuple((0, s) if _is_number(s) else (1, 0) for s in seeds) + (name,)
    return sorted(runs, key=order)


def table(recipe: str, runs: list[tuple[str, dict]]) -> str:
    """The Markdown of docs/recipes/_results_<recipe>.md."""
    source = f"docs/results/{recipe}/"
    head = (f"<!-- generated by docs/gen_results.py from {source}*.json: do not edit; "
            f"add a summary.json there and rebuild -->\n\n")
    if not runs:
        return (head + f"**`{recipe}`: {NONE_YET}.** Copy the `summary.json` of "
                f"`sensorium demo {recipe} --out DIR --seed S` into `{source}` (one file per run, e.g. "
                f"`d0_t0.json`) and rebuild the docs.\n")
    columns = COLUMNS[recipe]
    header = ["run", "data seed", "train seed", *(c.header for c in columns), "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, summary in runs:
        cells = [f"`{name}`", _fmt(summary.get("data_seed"), 0), _fmt(summary.get("train_seed"), 0)]
        cells += [_fmt(c.get(summary), c.digits, c.signed) for c in columns]
        cells.append(_fmt(summary.get("seconds"), 0))
        lines.append("| " + " | ".join(cells) + " |")
    if len(runs) > 1:
        # With several training seeds, one row per training seed first: a seed's spread over datasets
        # is read beside the other seed's on the same rows' data seeds.
        train_seeds = sorted({s.get("train_seed") for _, s in runs if _is_number(s.get("train_seed"))})
        if len(train_seeds) > 1:
            for seed in train_seeds:
                mine = [run for run in runs if run[1].get("train_seed") == seed]
                if len(mine) > 1:
                    lines.append(_mean_row(f"**mean ± std, train seed {seed}** ({len(mine)} runs)", columns, mine))
        lines.append(_mean_row(f"**mean ± std** ({len(runs)} runs)", columns, runs))
    return head + "\n".join(lines) + "\n"


def _mean_row(label: str, columns: list[Column], runs: list[tuple[str, dict]]) -> str:
    cells = [label, "", ""]
    for c in [*columns, Column("seconds", lambda s: s.get("seconds"), 0)]:
        values = [v for v in (c.get(s) for _, s in runs) if _is_number(v)]
        if len(values) < 2:
            cells.append(MISSING if not values else _fmt(values[0], c.digits, c.signed))
            continue
        mean, std = _mean_std(values)
        note = f" (n={len(values)})" if len(values) != len(runs) else ""
        cells.append(f"{_fmt(mean, c.digits, c.signed)} ± {std:.{c.digits}f}{note}")
    return "| " + " | ".join(cells) + " |"


def generate(results: Path = DOCS / "results", out: Path = DOCS / "recipes") -> list[Path]:
    """Write every recipe's table; returns the files whose content changed."""
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    for recipe in RECIPES:
        path = out / f"_results_{recipe}.md"
        text = table(recipe, load(results, recipe))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


# --- mkdocs hook (mkdocs.yml: `hooks: [docs/gen_results.py]`) ------------------------------------
def on_pre_build(config) -> None:
    docs = Path(config["docs_dir"])
    generate(docs / "results", docs / "recipes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DOCS / "results", help="folder of <recipe>/*.json")
    parser.add_argument("--out", type=Path, default=DOCS / "recipes", help="where _results_<recipe>.md go")
    args = parser.parse_args(argv)
    for path in generate(args.results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
