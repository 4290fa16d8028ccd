"""The rgbpc recipe end to end at tiny scale through the `sensorium` command: each packaged YAML
fits on CPU (the paper YAMLs with a tiny random DINOv2 saved to a temporary directory, extracted
through `from_pretrained(local_dir)`), `sensorium eval rgbpc` writes the evaluation with all four
action-head sources, `sensorium embed rgbpc` writes RGB-only packs, `sensorium report` shows it
all, and a broken dataset fails with one message."""

import json
import shutil

import pytest

from sensorium.cli import main
from sensorium.data.packs import open_pack

TRAINER = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
           "false", "--trainer.precision", "32-true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
           "--trainer.strategy", "auto", "--trainer.log_every_n_steps", "1", "--run.loggers", "[csv]"]
DATA = ["--data.init_args.points", "16", "--data.init_args.batch_size", "4", "--data.init_args.eval_windows", "4",
        "--data.init_args.eval_points", "8", "--data.init_args.action_points", "16",
        "--data.init_args.action_train_episodes", "6", "--data.init_args.num_workers", "0"]
ALIGN = ["--model.init_args.evaluation.action_steps", "20", "--model.init_args.evaluation.action_seeds", "1"]


def _fit(config, data, runs, version, *extra):
    assert main(["fit", "--config", config, "--data.root", str(data), "--run.root", str(runs), "--run.version", version,
                 *TRAINER, *DATA, *extra]) == 0
    return runs / "rgbpc" / version


@pytest.mark.slow
def test_demo_yamls_fit_distil_eval_embed_and_report(tiny_data, tmp_path):
    align = _fit("rgbpc/demo", tiny_data, tmp_path / "runs", "align", *ALIGN, "--data.init_args.batches_per_epoch", "3")
    best = align / "checkpoints" / "best.ckpt"
    assert best.is_file() and (align / "export" / "model.safetensors").is_file()
    header = (align / "metrics.csv").read_text().splitlines()[0]
    assert "val/point_top1" in header and "train/masked_negatives_epoch" in header and "share/set_step" in header
    student = _fit("rgbpc/distil", tiny_data, tmp_path / "runs", "distil", "--model.init_args.teacher", str(best),
                   "--model.init_args.student.widths", "[8, 16]", "--model.init_args.pretraining.views", "8",
                   "--model.init_args.pretraining.steps", "2", "--model.init_args.pretraining.keep_batch", "2")
    assert (student / "export" / "model.safetensors").is_file()

    assert main(["eval", "rgbpc", "--ckpt", str(best), "--student", str(student / "export"), *ALIGN]) == 0
    report = json.loads((align / "eval" / "rgbpc.json").read_text())
    assert set(report["action"]["error"]) == {"pc", "rgb_aligned", "rgb_raw", "student"}
    for closer in ("gap_closed", "student_gap_closed"):  # one head: its own share is the reported one
        per_head = report["action"][f"{closer}_per_head"]
        assert (per_head is None) == (report["action"][closer] is None)
        if per_head is not None:
            assert len(per_head["per_head"]) == 1 and per_head["mean"] == pytest.approx(report["action"][closer])
    assert report["candidates"] == 32 and report["chance_top1"] == pytest.approx(1 / 32)
    assert 0 <= report["point_top1"] <= 1 and report["fusion"]["mode"] == "gate"
    assert (align / "eval" / "similarity_histogram.png").stat().st_size > 0

    assert main(["embed", "rgbpc", "--ckpt", str(student / "export"), "--frames", str(tiny_data / "rgb"),
                 "--out", str(tmp_path / "embedded")]) == 0
    pack = open_pack(tmp_path / "embedded" / "student" / "reach_box" / "episode_000.zarr")
    assert pack.grid == (4, 6) and pack.channels == 64 and pack.num_frames == 10

    assert main(["report", str(align)]) == 0
    html = (align / "report.html").read_text()
    assert "The action-head test" in html and "Point-to-patch retrieval" in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_paper_yamls_run_on_cpu_with_a_tiny_local_backbone(tiny_data, tmp_path):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    local = tmp_path / "tiny-dinov3-stand-in"
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=8, image_size=32)).save_pretrained(local)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("features"))
    assert main(["extract", "rgbpc", "--frames", str(data / "rgb"), "--out", str(data / "features"),
                 "--encoders", f"dinov3=hf:{local}", "--resize", "32", "48", "--no-progress"]) == 0
    tiny = ["--model.init_args.net.encoders", "{dinov3: 16}", "--data.init_args.encoders", "[dinov3]",
            "--model.init_args.net.pc_dim", "32", "--model.init_args.net.dim", "16",
            "--model.init_args.net.adapter_hidden", "16", "--model.init_args.net.set_tokens", "8"]
    align = _fit("rgbpc/paper", data, tmp_path / "runs", "paper", *tiny, *ALIGN, "--run.early_stopping_patience", "null")
    assert (align / "checkpoints" / "best.ckpt").is_file()
    student = _fit("rgbpc/paper_distil", data, tmp_path / "runs", "paper_distil",
                   "--model.init_args.teacher", str(align / "checkpoints" / "best.ckpt"),
                   "--data.init_args.encoders", "[dinov3]", "--model.init_args.student.widths", "[8, 8, 16]",
                   "--model.init_args.student.dim", "16")
    assert (student / "export" / "model.safetensors").is_file()


def test_a_broken_dataset_fails_with_one_message(data_copy, tmp_path, capsys):
    (data_copy / "rgb" / "reach_sphere" / "episode_003" / "camera.json").unlink()
    code = main(["fit", "--config", "rgbpc/demo", "--data.root", str(data_copy), "--run.root", str(tmp_path / "runs"),
                 *TRAINER, *DATA])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sensorium: error:")]
    assert len(lines) == 1 and "reach_sphere/episode_003/camera.json: missing camera.json" in lines[0]
