"""The tactile recipe end to end at tiny scale: every packaged tactile YAML fits through the CLI
with overrides that shrink it (the paper config with a tiny random CLIP vision tower saved to a
temporary directory), `sensorium eval tactile` writes eval/tactile.json and a grid per sensor,
and `sensorium report` shows the recipe's sections."""

import csv
import json
from pathlib import Path

import pytest

from sensorium.cli import run as sensorium
from sensorium.recipes import RECIPES
from sensorium.recipes.tactile.reader import SENSORS
from sensorium.recipes.tactile.synth import generate

CONFIG_DIR = RECIPES["tactile"].configs
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
# Two batches of 4 windows, one epoch, validation once: seconds on one CPU thread.
SHRINK = """
trainer:
  accelerator: cpu
  precision: 32-true
  max_epochs: 1
  limit_train_batches: 2
  log_every_n_steps: 1
  check_val_every_n_epoch: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  init_args:
    model: {img_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2, decoder_embed_dim: 16,
            decoder_depth: 1, decoder_num_heads: 2}
    augment: {enabled: true}
    evaluation: {knn_k: 3, grid_samples: 2}
data:
  init_args:
    image_size: 32
    labels_csv: labels.csv
    reach_before_contact: false
    batch_size: 4
    eval_batch_size: 8
    num_workers: 0
    cache: true
run:
  loggers: [csv]
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tacquad")
    generate(root, seed=0, items_indoor=6, items_outdoor=3, frames=6, size=32)
    return root


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A randomly initialised CLIP vision tower at 32 px / patch 8, saved like a downloaded one."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, num_channels=3)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPVisionModel(config).save_pretrained(path)
    return path


def _shrink(tmp_path, config: Path, clip_dir: Path) -> list[str]:
    """Overrides after `fit`'s own --config (a YAML given twice would reset --run.root)."""
    shrink = tmp_path / "shrink.yaml"
    shrink.write_text(SHRINK)
    extra = []
    if config.name == "paper.yaml":
        # The paper's CLIP ViT-L/14 directory, replaced by the tiny random tower (SHRINK already
        # moves it to the CPU in fp32: fp16 needs a GPU); base_lr and accumulation stay the paper's.
        extra = ["--model.init_args.model.pretrained", str(clip_dir)]
    return ["--config", str(shrink), *extra]


def _last_values(metrics_csv: Path) -> dict[str, float]:
    """The last non-empty value of every column of a metrics.csv."""
    values = {}
    for row in csv.DictReader(open(metrics_csv)):
        values |= {k: float(v) for k, v in row.items() if v not in ("", None)}
    return values


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_yaml_fits_a_few_steps_through_the_cli(config, tiny_data, tiny_clip_dir, tmp_path):
    from sensorium.engine.demo import fit

    cli = fit(config, tmp_path / "runs", "smoke", *_shrink(tmp_path, config, tiny_clip_dir),
              "--data.init_args.root", str(tiny_data))
    run = cli.run_dir
    assert run == tmp_path / "runs" / "tactile" / "smoke"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "export" / "model.safetensors").is_file()
    logged = _last_values(run / "metrics.csv")
    loss = cli.model.loss_config
    if loss.mode == "alternating":  # one task per batch: 2 batches at ratio 0.5 give one of each
        assert {"train/loss_static_epoch", "train/loss_dynamic_epoch"} <= set(logged)
        assert "train/alpha_step" not in logged
    else:  # the note's metrics, per step and per epoch
        for name in ("loss_total", "loss_static", "loss_dynamic", "loss_recon", "loss_pred", "loss_ratio",
                     "weighted_static", "weighted_dynamic", "static_contribution", "dynamic_contribution"):
            assert f"train/{name}_step" in logged and f"train/{name}_epoch" in logged, name
        if not loss.balance:
            assert logged["train/alpha_step"] == pytest.approx(loss.alpha)
            assert logged["train/beta_step"] == pytest.approx(loss.beta)
        assert logged["train/static_contribution_step"] + logged["train/dynamic_contribution_step"] \
            == pytest.approx(1.0, abs=1e-4)
    assert "train/grad_norm_step" in logged and "val/pred_mse_ratio" in logged
    # frame 4 of sliding contacts apart, from the synthetic frame labels (the tiny val split has no
    # pressed-in-place windows: `ratio_by_motion` is tested on both kinds in test_task.py)
    assert "val/pred_mse_ratio_sliding" in logged and "val/pred_mse_ratio_static" not in logged
    # the two tasks' gradient cosine: joint runs only, on the first batch (grad_cosine_every 50)
    if loss.mode == "joint":
        cosines = [float(r["train/grad_cosine"]) for r in csv.DictReader((run / "metrics.csv").read_text().splitlines())
                   if r.get("train/grad_cosine")]
        assert len(cosines) == 1 and -1.0 <= cosines[0] <= 1.0
    else:
        assert "train/grad_cosine" not in logged
    if config.name == "paper.yaml":
        assert cli.model.net.encoder.__class__.__name__ == "CLIPBackbone"
        # MAE lr rule: base_lr 1.5e-4 x batch 4 (shrunk) x accumulate 2 / 256
        assert logged["lr_resolved"] == pytest.approx(1.5e-4 * 4 * 2 / 256)


def test_eval_writes_tactile_json_and_a_grid_per_sensor_then_report(tiny_data, tiny_clip_dir, tmp_path,
                                                                    monkeypatch):
    from sensorium.engine.demo import fit

    monkeypatch.chdir(tmp_path)
    cli = fit(CONFIG_DIR / "demo.yaml", tmp_path / "runs", "smoke", *_shrink(tmp_path, CONFIG_DIR / "demo.yaml",
                                                                          tiny_clip_dir),
              "--data.init_args.root", str(tiny_data))
    run = cli.run_dir
    assert sensorium(["eval", "tactile", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--untrained"]) == 0

    report = json.loads((run / "eval" / "tactile.json").read_text())
    for key in ("pred_mse_ratio", "pixel_pred_mse_ratio", "pred_mse_ratio_masked", "psnr_masked", "knn_accuracy",
                "linear_probe_accuracy"):
        assert isinstance(report[key], float), key
    assert report["pred_mse_ratio"] == pytest.approx(report["pred_mse"] / report["copy_mse"], rel=1e-5)
    # frame 4 of sliding and pressed-in-place contacts apart: every TEST window is one or the other
    kinds = [name for name in ("sliding", "static") if f"pred_mse_ratio_{name}" in report]
    assert kinds and sum(report[f"num_samples_{name}"] for name in kinds) == report["num_samples"]
    assert all(report[f"pred_mse_ratio_{name}"] > 0 for name in kinds)
    assert 0.0 <= report["knn_accuracy"] <= 1.0 and report["num_samples"] > 0
    # the headline k-NN is the protocol's entry of the table of all protocols (the demo YAML: with
    # reference frames, chosen on val)
    assert set(report["knn_protocols"]) == {f"{pool}{ref}/{std}" for pool in ("mean", "cls") for ref in ("", "-ref")
                                            for std in ("none", "bank", "sensor")}
    chosen = f"{report['pool']}{'-ref' if report['reference'] else ''}/{report['standardize']}"
    assert report["protocol"]["chosen_on"] == "val" and report["knn_accuracy"] == report["knn_protocols"][chosen]
    # the field's probes on the synthetic frame labels: fitted on train, chosen on val, scored on test
    probes = report["contact_probes"]
    assert {"force_r2", "force_rmse", "contact_mm", "slip_f1"} <= set(report)
    assert report["force_r2"] == probes["force_r2"] <= 1.0 and report["force_rmse"] >= 0.0
    assert report["contact_mm"] >= 0.0 and 0.0 <= report["slip_f1"] <= 1.0
    assert probes["skipped"] == {} and probes["sizes"]["force"][2] == report["num_samples"]
    untrained = json.loads((run / "eval" / "tactile_untrained.json").read_text())
    # untrained residual model = the copy-frame-3 predictor (zero-initialised change head)
    assert untrained["pred_mse_ratio"] == pytest.approx(1.0)
    for sensor in SENSORS:
        png = run / "eval" / f"grid_{sensor}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", sensor

    assert sensorium(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Static and dynamic tasks over the steps" in html and "Evaluation on TEST objects" in html
    assert "Reconstructions and frame-4 predictions (TEST)" in html
    assert html.count("data:image/png;base64,") >= 3 + len(SENSORS)  # curves + one grid per sensor
    assert "train/grad_cosine" in html and "joint, balanced to a static share of 0.5" in html
    assert "slip F1" in html and "regularisation chosen on VAL" in html


def test_without_frame_labels_the_contact_probes_are_skipped_and_said(tiny_data, tiny_clip_dir, tmp_path):
    import shutil

    from sensorium.engine.demo import fit, test_checkpoint

    root = tmp_path / "tacquad"
    shutil.copytree(tiny_data, root)
    (root / "frame_labels.csv").unlink()  # as on real TacQuad
    cli = fit(CONFIG_DIR / "alternating.yaml", tmp_path / "runs", "smoke",
              *_shrink(tmp_path, CONFIG_DIR / "alternating.yaml", tiny_clip_dir), "--data.init_args.root", str(root))
    test_checkpoint(cli, cli.run_dir / "checkpoints" / "last.ckpt")
    report = json.loads((cli.run_dir / "eval" / "tactile.json").read_text())
    assert "force_r2" not in report and "knn_accuracy" in report
    assert report["contact_probes"]["skipped"].startswith("no frame labels for these windows")
    from sensorium.recipes.tactile.report import sections

    texts = " ".join(str(part) for section in sections(cli.run_dir) for part in vars(section).values())
    assert "alternating mode runs one task per batch" in texts and "probes: not run (no frame labels" in texts


def test_protocol_chosen_on_val_with_reference_frames_is_the_one_test_reports(tiny_data, tiny_clip_dir, tmp_path):
    from sensorium.engine.demo import fit, test_checkpoint, test_untrained

    cli = fit(CONFIG_DIR / "demo.yaml", tmp_path / "runs", "smoke",
              *_shrink(tmp_path, CONFIG_DIR / "demo.yaml", tiny_clip_dir), "--data.init_args.root", str(tiny_data),
              "--data.init_args.reference_frames", "true", "--model.init_args.evaluation.choose_on_val", "true",
              "--model.init_args.evaluation.candidate_k", "[3, 5]")
    test_checkpoint(cli, cli.run_dir / "checkpoints" / "last.ckpt")
    report = json.loads((cli.run_dir / "eval" / "tactile.json").read_text())
    protocol = report["protocol"]
    assert protocol["chosen_on"] == "val" and protocol["val_knn_accuracy"] == max(protocol["val_knn"].values())
    # candidates: the config's, and pool x (plain, relative to the reference frame) x standardise x k
    e = cli.model.eval_config
    grid = {f"{pool}{ref}/{std}/k{k}" for pool in ("mean", "cls") for ref in ("", "-ref")
            for std in ("none", "bank", "sensor") for k in (3, 5)}
    assert set(protocol["val_knn"]) == grid | {f"{e.pool}/{e.standardize}/k{e.knn_k}"}
    chosen = f"{protocol['pool']}{'-ref' if protocol['reference'] else ''}/{protocol['standardize']}"
    assert (report["pool"], report["standardize"], report["knn_k"]) == (protocol["pool"], protocol["standardize"],
                                                                         protocol["k"])
    # TEST under every protocol at the chosen k; the headline is the chosen one's entry
    assert set(report["knn_protocols"]) == {f"{pool}{ref}/{std}" for pool in ("mean", "cls") for ref in ("", "-ref")
                                            for std in ("none", "bank", "sensor")}
    assert report["knn_accuracy"] == report["knn_protocols"][chosen]
    assert report["contact_probes"]["reference"] == protocol["reference"]
    # the untrained encoder, with the same settings, chooses its own on val
    baseline = test_untrained(cli, tmp_path / "baseline")
    untrained = json.loads((baseline / "eval" / "tactile.json").read_text())
    assert untrained["protocol"]["chosen_on"] == "val" and set(untrained["protocol"]["val_knn"]) == set(protocol["val_knn"])
    from sensorium.recipes.tactile.report import sections

    texts = " ".join(str(part) for section in sections(cli.run_dir) for part in vars(section).values())
    assert "Probe protocol of the trained encoder chosen on VAL before TEST was read" in texts


@pytest.mark.slow
def test_demo_summary_holds_the_field_metrics(tmp_path):
    import subprocess
    import sys

    from sensorium.cli import main

    shrink = tmp_path / "shrink.yaml"
    shrink.write_text(SHRINK)
    out = tmp_path / "demo"
    assert main(["demo", "tactile", "--out", str(out), "--items-indoor", "6", "--items-outdoor", "3", "--seed", "1",
                 "--", "--config", str(shrink)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("force_r2", "contact_mm", "slip_f1"):  # DESIGN.md's field metrics, trained and untrained
        assert isinstance(summary["metrics"][key], float) and isinstance(summary["baseline"][key], float), key
    assert summary["metrics_more"]["force_rmse"] >= 0.0
    checker = Path(__file__).resolve().parents[4] / "shared" / "tools" / "check_summary.py"
    if checker.is_file():  # the contract's own checker, where the shared tools sit beside the checkout
        result = subprocess.run([sys.executable, str(checker), "--strict", str(out / "summary.json")],
                                check=False, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
