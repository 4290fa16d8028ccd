import subprocess
import sys

import pytest
import torch
from helpers import TOY, toy_cli

from sensorium.engine.doctor import check_batch_labels, loss_shares, split_overlaps, stall_message
from sensorium.errors import DoctorError

pytestmark = pytest.mark.usefixtures("clean_run_env")


def test_single_class_batch_names_sampler_and_counts():
    with pytest.raises(DoctorError, match=r"sampler MySampler holds a single class \(label counts \{3: 4\}\)"):
        check_batch_labels(torch.tensor([3, 3, 3, 3]), "MySampler")


def test_batch_without_positive_pair_is_an_error():
    with pytest.raises(DoctorError, match="no positive pair"):
        check_batch_labels(torch.tensor([0, 1, 2, 3]), "S")
    check_batch_labels(torch.tensor([0, 0, 1, 2]), "S")  # one positive pair is enough


def test_overlap_by_id_and_by_content():
    problems = split_overlaps({"train": {"a": "h1", "b": "h2"}, "val": {"c": "h3"}, "test": {"a": "h9", "d": "h2"}})
    assert any("sample id(s) in both test and train" in p and "'a'" in p for p in problems)
    assert any("same content" in p and "d = b" in p for p in problems)
    assert split_overlaps({"train": {"a": "1"}, "test": {"b": "2"}}) == []


def test_loss_shares_and_stall_message():
    shares = loss_shares({"a": torch.tensor(3.0), "b": torch.tensor(-1.0)})
    assert shares == pytest.approx({"a": 0.75, "b": 0.25})
    assert stall_message([1.0] * 50, lr=1e-9, tolerance=0.03).startswith("loss has not moved in 50 steps")
    assert stall_message([2.0 - i / 50 for i in range(50)], lr=1e-3, tolerance=0.03) is None


def test_fit_stops_on_single_class_batches(tmp_path):
    with pytest.raises(DoctorError, match="single class"):
        toy_cli(tmp_path, "--data.single_class_batches", "true")


def test_fit_names_parameters_without_gradient(tmp_path):
    with pytest.raises(DoctorError, match=r"unused\.weight, unused\.bias"):
        toy_cli(tmp_path, "--model.unused_layer", "true")


def test_nonfinite_loss_skips_steps_then_stops(tmp_path, capsys):
    with pytest.raises(DoctorError, match="3 optimiser steps in a row had a non-finite loss"):
        toy_cli(tmp_path, "--model.nan_loss", "true", "--run.doctor.max_nonfinite_in_row", "3")
    out = capsys.readouterr().out
    assert "step 0: non-finite loss; optimiser step skipped (1 in a row" in out


def test_stalled_loss_warns_with_lr(tmp_path):
    with pytest.warns(UserWarning, match=r"loss has not moved in 6 steps .* at lr 1e-12"):
        toy_cli(tmp_path, "--model.optim.lr", "1e-12", "--model.optim.warmup_epochs", "0",
                "--run.doctor.stall_steps", "6", epochs=3)


def test_tiny_loss_term_share_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"loss term 'tiny' is 0\.\d% of the total \(under 5%\)"):
        toy_cli(tmp_path, "--model.tiny_term_weight", "0.001", "--run.doctor.share_warmup_steps", "2")
    metrics = (tmp_path / "runs" / "toy" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "share/tiny_step" in metrics and "share/supcon_step" in metrics


def test_exempt_terms_are_logged_but_not_warned_about(tmp_path, monkeypatch):
    import toy_recipe

    monkeypatch.setattr(toy_recipe.ToyTask, "share_check_exempt", frozenset({"tiny"}))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toy_cli(tmp_path, "--model.tiny_term_weight", "0.001", "--run.doctor.share_warmup_steps", "2")
    assert not [w for w in caught if "loss term 'tiny'" in str(w.message)]
    metrics = (tmp_path / "runs" / "toy" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "share/tiny_step" in metrics


def test_overlapping_splits_stop_the_run(tmp_path):
    with pytest.raises(DoctorError, match="same content"):
        toy_cli(tmp_path, "--data.leak_test_into_train", "true")


def test_parameter_counts_printed(tmp_path, capsys):
    toy_cli(tmp_path, epochs=1)
    assert "[doctor] parameters: total 416, trainable 416, frozen 0" in capsys.readouterr().out


def test_doctor_command_reports_problems_without_training(tmp_path):
    env_path = str(tmp_path.parent)
    cmd = [sys.executable, "-m", "sensorium.cli", "doctor", "--batches", "2", *TOY,
           "--model.unused_layer", "true", "--data.leak_test_into_train", "true"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                            env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "PROBLEM: train/val/test overlap" in result.stdout
    assert "PROBLEM: 2 trainable parameter(s) received no gradient in the first 1 backward" in result.stdout
    assert "checked 2 training batch(es)" in result.stdout
    assert not (tmp_path / "runs").exists()  # nothing written
    del env_path


def test_oversubscription_warns_when_threads_exceed_free_cores():
    from sensorium.engine.doctor import oversubscription_message, runnable_processes

    assert oversubscription_message(threads=2, cores=2, others=0) is None
    assert oversubscription_message(threads=1, cores=2, others=1) is None
    assert oversubscription_message(threads=1, cores=2, others=3) is None  # one thread is all one can ask for
    message = oversubscription_message(threads=2, cores=2, others=1)
    assert message is not None and "2 threads" in message and "1 of 2 cores" in message
    running = runnable_processes(samples=2, interval=0.0)
    assert running is None or running >= 1  # this process is running while it reads the count
