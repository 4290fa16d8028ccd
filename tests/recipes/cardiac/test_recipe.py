"""The cardiac recipe end to end at tiny scale: each YAML fits through the CLI (val choosing
best.ckpt and early stopping), `sensorium eval cardiac` reports on TEST in eval/cardiac.json
(IoU, Chamfer, the voxel metrics), meshes and renderings, and `sensorium report` shows them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sensorium.recipes import RECIPES
from sensorium.recipes.cardiac.prepare import PrepareConfig, run
from sensorium.recipes.cardiac.reader import CARDIAC_STRUCTURES
from sensorium.recipes.cardiac.synth import generate

CONFIGS = sorted(RECIPES["cardiac"].configs.glob("*.yaml"))
# Tiny sizes for any cardiac YAML (the paper config's GPU, KL bottleneck and learned latents stay,
# only smaller): seconds on one CPU thread.
TINY = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
    "--trainer.max_epochs", "2", "--trainer.accumulate_grad_batches", "1", "--trainer.check_val_every_n_epoch", "1",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--model.init_args.net.dim", "32", "--model.init_args.net.num_latents", "8", "--model.init_args.net.depth", "1",
    "--model.init_args.net.head_dim", "16", "--model.init_args.net.num_freqs", "4",
    "--model.init_args.loss.surface_queries", "64", "--model.init_args.loss.eikonal_points", "32",
    "--model.init_args.evaluation.grid_resolution", "16", "--model.init_args.evaluation.mesh_samples", "500",
    "--model.init_args.evaluation.render_cases", "1",
    "--data.init_args.sampling.surface_points", "256", "--data.init_args.sampling.volume_points", "128",
    "--data.init_args.sampling.near_points", "128", "--data.init_args.batch_size", "2",
    "--data.init_args.epoch_repeats", "1", "--data.init_args.eval_batch_size", "2", "--data.init_args.num_workers", "0",
    "--run.loggers", "[csv]", "--run.early_stopping_patience", "5",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """6 tiny hearts (3 mm voxels), prepared with few points; 2 train, 2 val, 2 test."""
    root = tmp_path_factory.mktemp("cardiac")
    generate(root / "raw", seed=0, cases=6, shape=(44, 44, 33), spacing=(3.0, 3.0, 4.0))
    result = run(root / "raw", root / "data", PrepareConfig(surface_points=1024, volume_points=512, near_points=600,
                                                          grid_resolution=12), val_fraction=0.3, test_fraction=0.3,
                 progress=False)
    assert result["splits"] == {"train": 2, "val": 2, "test": 2}
    return root / "data"


def _sensorium(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sensorium.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_each_yaml_fits_and_evaluates(config, prepared, tmp_path):
    _sensorium("fit", "--config", str(config), "--data.root", str(prepared), "--run.root", str(tmp_path / "runs"),
               "--run.version", "smoke", *TINY, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "cardiac" / "smoke"
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "export" / "model.safetensors").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    # best.ckpt is picked by val mean IoU; the doctor logs each loss term's share; nothing of test
    # is computed while fitting.
    assert "val/mean_iou" in header and "val/iou/pulmonary_veins" in header and "share/near" in header
    assert "test/" not in header
    import torch

    # The callbacks' state keys name their settings: both choosers monitor val/mean_iou, and the
    # best score is the best val/mean_iou of the fit.
    callbacks = torch.load(best, map_location="cpu", weights_only=False)["callbacks"]
    choosers = {key.split("{")[0]: key for key in callbacks if "'monitor': '" in key}
    assert set(choosers) == {"ModelCheckpoint", "EarlyStopping"}
    assert all("'monitor': 'val/mean_iou'" in key for key in choosers.values())
    import csv

    with open(run_dir / "metrics.csv") as f:
        val_iou = [float(row["val/mean_iou"]) for row in csv.DictReader(f) if row["val/mean_iou"]]
    assert float(callbacks[choosers["ModelCheckpoint"]]["best_model_score"]) == pytest.approx(max(val_iou))

    done = _sensorium("eval", "cardiac", "--ckpt", str(best), cwd=tmp_path)
    assert "mean-shape baseline" in done.stdout
    report = json.loads((run_dir / "eval" / "cardiac.json").read_text())
    split = {row.split(",")[0]: row.split(",")[1] for row in (prepared / "split.csv").read_text().split()[1:]}
    assert report["split"] == "test" and report["sdf_sign"] == "negative inside"
    assert sorted(report["cases"]) == sorted(c for c, s in split.items() if s == "test")  # test cases, all of them
    assert list(report["class_iou"]) == list(CARDIAC_STRUCTURES)
    assert 0.0 <= report["mean_iou"] <= 1.0 and set(report["cases"]) and report["num_cases"] == len(report["cases"])
    # The voxel metrics of every structure, in mm and mL, per case and as means over the test cases.
    for key in ("dice", "hd95_mm", "assd_mm", "class_volume_error_ml"):
        assert list(report[key]) == list(CARDIAC_STRUCTURES), key
    assert all(0.0 <= v <= 1.0 for v in report["dice"].values())
    assert all(v is None or v >= 0.0 for key in ("hd95_mm", "assd_mm") for v in report[key].values())
    assert report["overlap_ml"] >= 0.0 and report["gap_ml"] >= 0.0 and report["volume_error_ml"] >= 0.0
    # The true volumes are the label volumes' voxel counts x 3 x 3 x 4 mm^3, whatever the model did.
    from sensorium.recipes.cardiac.reader import npz_memmap

    case = min(report["cases"])
    labels = np.asarray(npz_memmap(prepared / f"{case}.npz")["voxel_labels"])
    true_ml = np.bincount(labels.ravel(), minlength=11)[1:] * 36.0 / 1000.0
    np.testing.assert_allclose([report["cases"][case]["true_ml"][n] for n in CARDIAC_STRUCTURES], true_ml)
    mean_shape = json.loads((run_dir / "eval" / "mean_shape.json").read_text())
    assert 0.0 < mean_shape["mean_iou"] <= 1.0  # the mean heart overlaps every heart somewhat
    assert mean_shape["split"] == "test" and 0.0 < mean_shape["mean_dice"] <= 1.0
    # (A 12^3 mean of two hearts can lose a thin structure: its surface distances are undefined.)
    distances = [v for v in mean_shape["hd95_mm"].values() if v is not None]
    assert len(distances) >= 5 and all(v > 0.0 for v in distances)
    assert list((run_dir / "eval").glob("render_*.png"))
    # Meshes exist for every (case, structure) with a reconstructed surface and are valid PLY.
    for ply in (run_dir / "eval" / "meshes").glob("*.ply"):
        assert ply.read_bytes().startswith(b"ply")
    assert report["missing_surfaces"] + len(list((run_dir / "eval" / "meshes").glob("*.ply"))) \
        == report["num_cases"] * len(CARDIAC_STRUCTURES)

    _sensorium("report", str(run_dir), cwd=tmp_path)
    html = (run_dir / "report.html").read_text()
    assert "Shape evaluation" in html and "mean shape" in html and "data:image/png;base64," in html
    assert "Voxel metrics on test" in html and "HD95 (mm)" in html
    assert (run_dir / "eval" / "structures_boxplot.png").read_bytes().startswith(b"\x89PNG")


def test_val_chooses_and_test_reports_on_disjoint_cases(prepared):
    """The val loader holds exactly the val cases and the test loader exactly the test cases
    (disjoint): validation, whose `val/mean_iou` best.ckpt and early stopping monitor, never sees a
    test case. Without test cases, testing is refused rather than done on val."""
    from sensorium.engine.lightning_cli import engine_callbacks
    from sensorium.engine.run import RunConfig
    from sensorium.errors import DataError
    from sensorium.recipes.cardiac.datamodule import CardiacDataModule
    from sensorium.recipes.cardiac.reader import read_split_csv
    from sensorium.recipes.cardiac.task import CardiacTask

    splits = read_split_csv(prepared / "split.csv")
    small = {"sampling": {"surface_points": 64, "volume_points": 64, "near_points": 64}, "eval_surface_points": 64}
    datamodule = CardiacDataModule(str(prepared), eval_batch_size=1, **small)
    datamodule.setup("fit")
    datamodule.setup("test")

    def cases(loader) -> list[str]:
        seen = [loader.dataset.paths[int(i)].stem for batch in loader for i in batch["index"]]
        assert len(seen) == len(set(seen))
        return sorted(seen)

    val, test = cases(datamodule.val_dataloader()), cases(datamodule.test_dataloader())
    assert (datamodule.val_dataloader().split, datamodule.test_dataloader().split) == ("val", "test")
    assert val == sorted(splits["val"]) and test == sorted(splits["test"]) and not set(val) & set(test)
    assert not set(val + test) & set(splits["train"])
    spec = datamodule.data_spec()
    assert sorted(spec.val_case_ids) == val and sorted(spec.test_case_ids) == test
    # Test batches carry each case's voxel ground truth; val batches need none.
    assert "voxel_labels" in next(iter(datamodule.test_dataloader()))
    assert "voxel_labels" not in next(iter(datamodule.val_dataloader()))

    task = CardiacTask(net={"dim": 32, "num_latents": 8, "depth": 1, "head_dim": 16})
    callbacks = engine_callbacks(RunConfig(early_stopping_patience=3), task, prepared / "run", fit=False)
    monitors = {type(c).__name__: c.monitor for c in callbacks if getattr(c, "monitor", None)}
    assert monitors == {"ModelCheckpoint": "val/mean_iou", "EarlyStopping": "val/mean_iou"}

    no_test = prepared.parent / "no_test"
    no_test.mkdir(exist_ok=True)
    for path in prepared.glob("*.npz"):
        (no_test / path.name).symlink_to(path)
    (no_test / "split.csv").write_text("".join(line.replace(",test", ",val") + "\n"
                                               for line in (prepared / "split.csv").read_text().split()))
    with pytest.raises(DataError, match="no test cases"):
        CardiacDataModule(str(no_test), **small).setup("test")


def test_config_sizes():
    """The YAMLs are the sizes: the paper net is VecSetX's ~0.3 B-parameter autoencoder with 1024
    learned latents, the demo's a CPU-sized one with local attention."""
    from dataclasses import asdict

    import torch
    import yaml

    from sensorium.config import as_config
    from sensorium.models.vecset import VecSetAutoEncoder
    from sensorium.recipes import resolve_config
    from sensorium.recipes.cardiac.task import CardiacNetConfig

    def net(name):
        config = yaml.safe_load(resolve_config(f"cardiac/{name}").read_text())
        with torch.device("meta"):  # counted without allocating
            return VecSetAutoEncoder(len(CARDIAC_STRUCTURES), **asdict(as_config(CardiacNetConfig,
                                                                                 config["model"]["init_args"]["net"])))

    paper, demo = net("paper"), net("demo")
    assert 0.25e9 < sum(p.numel() for p in paper.parameters()) < 0.45e9
    assert paper.num_latents == 1024 and paper.latent_init == "learned"
    assert sum(p.numel() for p in demo.parameters()) < 2e6 and demo.local


def test_prepared_data_reads_as_memory_maps(prepared):
    """The reader maps npz members without loading them and agrees with np.load."""
    from sensorium.recipes.cardiac.reader import npz_memmap

    path = next(prepared.glob("*.npz"))
    mapped, loaded = npz_memmap(path), np.load(path)
    assert isinstance(mapped["near_sdf"], np.memmap)
    for name in ("surface_points", "surface_labels", "near_sdf", "grid_sdf", "class_names"):
        np.testing.assert_array_equal(np.asarray(mapped[name]), loaded[name])


def test_augmentation_is_a_rotation_and_scale_of_points_and_sdf(prepared):
    """Rotation and scaling move every point of a sample together and scale its SDF values by the
    same factor (distances are rigid-invariant), so the labels stay exact."""
    import torch

    from sensorium.recipes.cardiac.reader import CardiacCases, CardiacSampling
    from sensorium.recipes.cardiac.transforms import RandomRotateScale

    path = next(prepared.glob("*.npz"))
    sampling = CardiacSampling(64, 64, 64)
    torch.manual_seed(0)
    plain = CardiacCases([path], sampling)[0]
    torch.manual_seed(0)  # the same rows are drawn; only the augmentation differs
    moved = CardiacCases([path], sampling, transform=RandomRotateScale(rotate_deg=40.0, scale=0.2))[0]
    factor = moved["vol_sdf"] / plain["vol_sdf"]
    k = float(factor.flatten()[0])
    assert 0.8 <= k <= 1.2
    torch.testing.assert_close(factor, torch.full_like(factor, k), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved["near_sdf"], plain["near_sdf"] * k)
    points = torch.cat([plain["surface_points"], plain["vol_points"], plain["near_points"]])
    moved_points = torch.cat([moved["surface_points"], moved["vol_points"], moved["near_points"]])
    # A rotation about the origin times k: norms and pairwise distances scale by k, directions turn.
    torch.testing.assert_close(moved_points.norm(dim=1), points.norm(dim=1) * k, rtol=1e-4, atol=1e-5)
    exact = "donot_use_mm_for_euclid_dist"  # cdist's matmul shortcut is inexact on the diagonal
    torch.testing.assert_close(torch.cdist(moved_points, moved_points, compute_mode=exact),
                               torch.cdist(points, points, compute_mode=exact) * k, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(moved_points / k, points, atol=1e-3)
    torch.testing.assert_close(moved["surface_labels"], plain["surface_labels"])

    # The datamodule augments its training cases exactly when `data.sampling` asks for it.
    from sensorium.recipes.cardiac.datamodule import CardiacDataModule

    for asked, expected in (({}, None), ({"rotate_deg": 40.0, "scale": 0.2}, RandomRotateScale(40.0, 0.2))):
        datamodule = CardiacDataModule(str(prepared), sampling={"surface_points": 64, "volume_points": 64,
                                                                "near_points": 64, **asked})
        datamodule.setup("fit")
        assert datamodule.datasets["train"].transform == expected
