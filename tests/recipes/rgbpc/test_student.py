"""The RGB-only student (issue 29): its distillation terms by hand, the patch stem, the dense targets'
cells on each encoder's grid, and `sensorium embed rgbpc` on frames alone."""

import math
import shutil

import numpy as np
import pytest
import torch

from sensorium.cli import main
from sensorium.data.image_grid import GridTransform
from sensorium.data.packs import open_pack
from sensorium.engine.checkpoint import export_model
from sensorium.errors import ConfigError
from sensorium.recipes.rgbpc.distil_task import frame_contrast_loss, frame_relation_loss, student_cells
from sensorium.recipes.rgbpc.metrics import gap_closed_per_head
from sensorium.recipes.rgbpc.model import StudentCNN, StudentConfig, load_student
from sensorium.recipes.rgbpc.reader import read_frames


def test_frame_relation_loss_by_hand():
    # student: two orthogonal points (similarity 0); teacher: the same direction twice (similarity 1)
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])
    # |S_s - S_t| = [[0, 1], [1, 0]]: mean 0.5
    assert float(frame_relation_loss(student, teacher)) == pytest.approx(0.5)
    assert float(frame_relation_loss(3 * student, teacher)) == pytest.approx(0.5)  # scale-free
    assert float(frame_relation_loss(teacher, 5 * teacher)) == pytest.approx(0.0)
    # frames are separate: a second frame that agrees halves the mean
    both_s, both_t = torch.cat([student, teacher]), torch.cat([teacher, teacher])
    assert float(frame_relation_loss(both_s, both_t)) == pytest.approx(0.25)


def test_frame_contrast_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # logits at temperature 1 = [[1, 0], [0, 1]]: each row's cross-entropy is log(1 + e^-1)
    assert float(frame_contrast_loss(s, 2 * s, temperature=1.0)) == pytest.approx(math.log(1 + math.exp(-1)))
    # swapped teacher points: each query's positive is the orthogonal one, log(1 + e)
    assert float(frame_contrast_loss(s, s.flip(1), temperature=1.0)) == pytest.approx(math.log(1 + math.e))
    assert float(frame_contrast_loss(s, s, temperature=0.01)) < 1e-6


def test_patch_stem_student_reads_its_cells_at_their_centres():
    student = StudentCNN(StudentConfig(widths=(4, 8), dim=6, stem="patch", patch=4, depths=(1, 1)))
    assert student.stride == 8 and student.channels == 8
    images = torch.randint(0, 255, (2, 3, 16, 24), dtype=torch.uint8)
    maps = student(images)
    assert maps.shape == (2, 6, 2, 3)
    uv = student.cell_uv(16, 24)  # (6, 2), row-major
    assert uv[:4].tolist() == [[3.5, 3.5], [11.5, 3.5], [19.5, 3.5], [3.5, 11.5]]
    np.testing.assert_allclose(student.to_grid(uv).numpy(), GridTransform.identity((16, 24), 8).to_grid(uv.numpy()))
    at = student.at_points(images, uv.expand(2, -1, -1))  # (2, 6, 6)
    torch.testing.assert_close(at, maps.flatten(2).transpose(1, 2))
    with pytest.raises(ConfigError, match="depths"):
        StudentCNN(StudentConfig(widths=(4, 8), stem="patch", depths=(1,)))
    with pytest.raises(ConfigError, match="stem"):
        StudentCNN(StudentConfig(stem="vit"))


def test_dense_cells_land_on_every_encoder_grid_and_unseen_cells_are_left_out():
    student = StudentCNN(StudentConfig(widths=(4, 8, 8), dim=6))  # stride 8
    same = GridTransform.identity((16, 24), 8)
    resized = GridTransform((16, 24), (32, 48), (0, 0, 32, 48), 16)  # x2, patch 16: the same cells
    own, grids = student_cells(student, (16, 24), {"a": same, "b": resized})
    expected = [[x, y] for y in (0.0, 1.0) for x in (0.0, 1.0, 2.0)]
    assert own.tolist() == expected and grids["a"].tolist() == expected and grids["b"].tolist() == expected
    # a crop of the right 16 columns: the first column of cells lies outside it
    cropped = GridTransform((16, 24), (16, 24), (0, 8, 16, 16), 8)
    own, grids = student_cells(student, (16, 24), {"a": same, "c": cropped})
    assert own.tolist() == [[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [2.0, 1.0]]
    assert grids["c"].tolist() == [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def test_embed_runs_the_student_on_frames_alone(tiny_data, tmp_path):
    frames = tmp_path / "only_frames" / "rgb"
    shutil.copytree(tiny_data / "rgb", frames)  # no point clouds, no packs, no actions
    config = StudentConfig(widths=(8, 16), dim=6, stem="patch", patch=4, depths=(1, 1))
    torch.manual_seed(0)
    export = tmp_path / "export"
    export_model(StudentCNN(config), {"recipe": "rgbpc", "task": "DistilTask",
                                      "hparams": {"student": {"widths": [8, 16], "dim": 6, "stem": "patch",
                                                              "patch": 4, "depths": [1, 1]}}}, export)
    assert main(["embed", "rgbpc", "--ckpt", str(export), "--frames", str(frames), "--out", str(tmp_path / "emb"),
                 "--batch-size", "4"]) == 0
    pack = open_pack(tmp_path / "emb" / "student" / "reach_box" / "episode_001.zarr")
    assert pack.grid == (4, 6) and pack.channels == 6 and pack.num_frames == 10
    assert pack.transform == GridTransform.identity((32, 48), 8)
    student = load_student(export).eval()
    image = (read_frames([frames / "reach_box" / "episode_001" / "step_0003.png"]) * 255).round().to(torch.uint8)
    with torch.inference_mode():
        direct = student(image)[0].permute(1, 2, 0).numpy()  # (Hs, Ws, D)
    np.testing.assert_allclose(pack.frames(3, 4)[0].astype(np.float32), direct, rtol=1e-2, atol=1e-2)


def _benchmark(name: str = "rgbpc_student"):
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_student_benchmark_tiny_mode_times_both_on_the_same_frames(capsys):
    result = _benchmark().main(["--tiny"])
    assert result["frames"] == [32, 48] and set(result["fps"]) == {"teacher", "student"}
    assert all(v > 0 for v in [*result["fps"].values(), *result["cpu_fps"].values()])
    assert result["params"]["student"] > 0
    assert result["params"]["teacher"] == (sum(result["params"]["teacher_encoders"].values())
                                           + result["params"]["teacher_adapters_fusion"])
    assert set(result["params"]["teacher_encoders"]) == {"shape8", "vit16"}
    assert "student speed-up" in capsys.readouterr().out


def test_diagnosis_gap_closed_per_head_seed_by_hand():
    module = _benchmark("rgbpc_student_diagnosis")
    report = {"pc": {"head_error_per_seed": {"test": [0.2, 0.1]}},
              "rgb_raw": {"head_error_per_seed": {"test": [0.6, 0.5]}},
              "student": {"head_error_per_seed": {"test": [0.4, 0.4]}}, "points": {"test": 10}}
    closed = module.gap_closed_per_seed(report)["student"]["test"]
    # seed 0: (0.6 - 0.4) / (0.6 - 0.2) = 0.5; seed 1: (0.5 - 0.4) / (0.5 - 0.1) = 0.25
    assert closed["per_seed"] == pytest.approx([0.5, 0.25]) and closed["mean"] == pytest.approx(0.375)
    assert closed["std"] == pytest.approx(0.125)
    assert module.gap_closed_per_seed({"student": report["student"]}) == {}


def test_action_report_gap_closed_per_head_by_hand():
    detail = {"pc": {"errors": [0.2, 0.1]}, "rgb_raw": {"errors": [0.6, 0.5]}, "student": {"errors": [0.4, 0.4]}}
    closed = gap_closed_per_head(detail, "student")
    assert closed["per_head"] == pytest.approx([0.5, 0.25]) and closed["mean"] == pytest.approx(0.375)
    assert closed["std"] == pytest.approx(0.125)
    assert gap_closed_per_head(detail, "rgb_aligned") is None  # a source that was not measured
    no_gap = {**detail, "pc": {"errors": [0.6, 0.1]}}  # head 0 fits pc exactly as well as raw RGB
    assert gap_closed_per_head(no_gap, "student") is None
