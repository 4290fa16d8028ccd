"""The documentation site: a strict mkdocs build (broken links, anchors or API names fail it), and the
results tables that docs/gen_results.py generates from demo summaries."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_results", DOCS / "gen_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(recipe: str, data_seed: int, seconds: float, **metrics) -> dict:
    return {"recipe": recipe, "seconds": seconds, "metrics": metrics, "baseline": {"knn_accuracy": 0.3},
            "data_seed": data_seed, "train_seed": 0, "stages_seconds": {"fit": seconds - 10}}


def test_results_tables_from_summaries(tmp_path):
    gen = _load_generator()
    results, out = tmp_path / "results", tmp_path / "out"
    (results / "welding").mkdir(parents=True)
    ablation = {"video": 0.4, "images": 0.3, "audio": 0.4, "sensor": 0.6}
    for seed, acc in ((1, 0.98), (0, 0.96)):
        summary = _summary("welding", seed, 500.0 + seed, knn_accuracy=acc, f1_macro=acc, ablation=ablation)
        (results / "welding" / f"d{seed}_t0.json").write_text(json.dumps(summary))

    changed = gen.generate(results, out)
    assert sorted(p.name for p in changed) == sorted(f"_results_{r}.md" for r in gen.RECIPES)
    welding = (out / "_results_welding.md").read_text()
    rows = [line for line in welding.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| `d0_t0.json` | 0 | 0 | 0.960 | 0.960 | 0.300 | +0.660 |")  # sorted by data seed
    assert rows[2].startswith("| `d1_t0.json` | 1 | 0 | 0.980 |")
    assert "0.970 ± 0.014" in rows[3] and rows[3].endswith("| 500 ± 1 |")  # sample std, as benchmarks/seeds.py
    for recipe in ("tactile", "cardiac", "rgbpc", "doppler"):
        assert "no summary.json committed yet" in (out / f"_results_{recipe}.md").read_text()
    assert gen.generate(results, out) == []  # unchanged input rewrites nothing (mkdocs serve does not loop)


def test_results_tables_give_each_training_seed_its_own_mean(tmp_path):
    gen = _load_generator()
    ablation = {"video": 0.4, "images": 0.3, "audio": 0.4, "sensor": 0.6}
    runs = []
    for data_seed, train_seed, acc in ((0, 0, 0.90), (1, 0, 0.94), (0, 1, 0.80), (1, 1, 0.84), (2, 1, 0.88)):
        summary = _summary("welding", data_seed, 500.0, knn_accuracy=acc, f1_macro=acc, ablation=ablation)
        runs.append((f"d{data_seed}_t{train_seed}.json", {**summary, "train_seed": train_seed}))
    rows = [line for line in gen.table("welding", runs).splitlines() if line.startswith("| **mean")]
    assert rows[0].startswith("| **mean ± std, train seed 0** (2 runs) |  |  | 0.920 ± 0.028 |")
    assert rows[1].startswith("| **mean ± std, train seed 1** (3 runs) |  |  | 0.840 ± 0.040 |")
    assert rows[2].startswith("| **mean ± std** (5 runs) |  |  | 0.872 ± 0.054 |")
    one_seed = gen.table("welding", runs[2:])  # one training seed: only the overall row
    assert [line.split(" | ")[0] for line in one_seed.splitlines() if line.startswith("| **mean")] == [
        "| **mean ± std** (3 runs)"]


def test_results_tables_reject_a_summary_of_another_recipe(tmp_path):
    gen = _load_generator()
    (tmp_path / "cardiac").mkdir()
    (tmp_path / "cardiac" / "x.json").write_text(json.dumps({"recipe": "welding", "metrics": {}}))
    with pytest.raises(SystemExit, match="'welding' summary in the 'cardiac' folder"):
        gen.generate(tmp_path, tmp_path / "out")


def test_committed_results_tables_are_up_to_date(tmp_path):
    gen = _load_generator()
    gen.generate(DOCS / "results", tmp_path)
    for recipe in gen.RECIPES:
        name = f"_results_{recipe}.md"
        assert (DOCS / "recipes" / name).read_text() == (tmp_path / name).read_text(), \
            f"docs/recipes/{name} is stale: run `python docs/gen_results.py` and commit it"


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings")),
                    reason="mkdocs, mkdocs-material or mkdocstrings not installed (the `docs` extra; "
                           "`make test` installs it)")
def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output[-4000:]}"
    assert "WARNING" not in output, output[-4000:]
    for page in ("index", "recipes/welding/index", "engine/index", "scaling/index", "notes/rgbpc/index"):
        assert (site / f"{page}.html").exists(), page
    api = (site / "api" / "index.html").read_text()
    for name in ("sensorium.losses.contrastive.supcon_loss", "sensorium.losses.contrastive.info_nce",
                 "sensorium.losses.masked.mae_loss", "sensorium.eval.knn.knn_predict",
                 "sensorium.data.datamodule.SensoriumDataModule", "sensorium.data.datamodule.DataSpec",
                 "sensorium.data.samplers.ClassBalancedBatchSampler", "sensorium.engine.task.SensoriumTask"):
        assert f'id="{name}"' in api, f"{name} is not rendered on the API page"
