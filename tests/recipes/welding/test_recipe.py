"""The welding recipe end to end at tiny scale, and its bad-input messages through the CLI."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sensorium.recipes import RECIPES

DEMO = RECIPES["welding"].configs / "demo.yaml"
def test_fit_then_test_writes_knn_report(tiny_data, tiny_config, tmp_path):
    from sensorium.engine.demo import fit, test_checkpoint, test_untrained

    cli = fit(DEMO, tmp_path / "runs", "smoke", "--config", str(tiny_config), "--data.root", str(tiny_data))
    run = cli.run_dir
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "export" / "model.safetensors").is_file()
    test_checkpoint(cli, run / "checkpoints" / "best.ckpt")
    report = json.loads((run / "eval" / "knn.json").read_text())
    assert report["num_samples"] == 24  # 2 TEST runs per class
    assert set(report["ablation"]) == {"video", "images", "audio", "sensor"}
    assert sum(map(sum, report["confusion_matrix"])) == 24
    assert report["knn"]["bank_size"] == 48  # all of TRAIN: train + carved val
    assert (run / "eval" / "confusion_matrix.png").stat().st_size > 0
    # The field metrics (issue 28) from the same k-NN's vote shares, beside its accuracy.
    assert set(report["auroc"]) == set(report["class_names"]) - {"Good"}  # every class has TEST runs
    assert report["auroc_mean"] == pytest.approx(sum(report["auroc"].values()) / len(report["auroc"]))
    assert all(0.0 <= report[key] <= 1.0 for key in ("binary_f1", "ece"))
    assert report["challenge_score"] == pytest.approx(
        0.6 * report["binary_f1"] + 0.4 * report["f1_macro"] - 0.05 * report["ece"])
    assert sum(report["reliability"]["count"]) == 24
    baseline = json.loads((test_untrained(cli, tmp_path / "base") / "eval" / "knn.json").read_text())
    assert 0.0 <= baseline["accuracy"] <= 1.0

    from sensorium.report.report import write_report

    html = write_report(run).read_text()
    assert "k-NN evaluation on TEST" in html and "data:image/png;base64," in html
    assert "Field metrics on TEST" in html and 'alt="reliability diagram"' in html


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sensorium.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _broken_copy(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    return data


def test_missing_subdir_fails_fast_with_one_message(tiny_data, tiny_config, tmp_path):
    data = _broken_copy(tiny_data, tmp_path)
    first = next(p for p in data.rglob("*.avi")).parent
    shutil.rmtree(first)
    result = _cli("fit", "--config", str(DEMO), "--config", str(tiny_config), "--data.root", str(data),
                  "--run.root", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("sensorium: error:")]
    assert len(message) == 1 and first.name in message[0] and "does not exist" in message[0], result.stderr[-2000:]


def test_undecodable_video_in_a_worker_gives_the_file_and_problem(tiny_data, tiny_config, tmp_path):
    data = _broken_copy(tiny_data, tmp_path)
    manifest = (data / "manifest.csv").read_text().splitlines()
    train_row = next(row for row in manifest[1:] if row.endswith(",TRAIN"))
    subdir = train_row.split(",")[-2]
    video = next((data / subdir).glob("*.avi"))
    video.write_bytes(b"this is not a video" * 100)
    result = _cli("fit", "--config", str(DEMO), "--config", str(tiny_config), "--data.root", str(data),
                  "--data.num_workers", "1", "--data.cache", "false", "--run.root", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("sensorium: error:")]
    assert len(message) == 1 and str(video) in message[0] and "video" in message[0], result.stderr[-3000:]
