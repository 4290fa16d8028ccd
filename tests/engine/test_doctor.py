import csv
import logging
import subprocess
import sys

import lightning as L
import pytest
import torch
import toy_recipe
from helpers import TOY, toy_cli
from lightning.pytorch.plugins.precision import MixedPrecision
from toy_recipe import ToyDataModule, ToyTask

from sensorium.engine.doctor import (
    Doctor,
    DoctorConfig,
    check_batch_labels,
    host_check_due,
    loss_shares_tensor,
    split_overlaps,
    stall_message,
    step_outcome,
)
from sensorium.errors import ConfigError, DoctorError



@pytest.fixture
def doctor_log(caplog):
    """The doctor's INFO messages, whether or not `sensorium.log.setup` has stopped propagation."""
    logger = logging.getLogger("sensorium.engine.doctor")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


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
    shares, valid = loss_shares_tensor({"a": torch.tensor(3.0), "b": torch.tensor(-1.0)})
    assert bool(valid) and shares.tolist() == pytest.approx([0.75, 0.25])
    assert not bool(loss_shares_tensor({"a": torch.tensor(0.0), "b": torch.tensor(0.0)})[1])  # undefined: no total
    assert stall_message([1.0] * 50, lr=1e-9, tolerance=0.03).startswith("loss has not moved in 50 steps")
    assert stall_message([2.0 - i / 50 for i in range(50)], lr=1e-3, tolerance=0.03) is None


def test_fit_stops_on_single_class_batches(tmp_path):
    with pytest.raises(DoctorError, match="single class"):
        toy_cli(tmp_path, "--data.single_class_batches", "true")


def test_fit_names_parameters_without_gradient(tmp_path):
    with pytest.raises(DoctorError, match=r"unused\.weight, unused\.bias"):
        toy_cli(tmp_path, "--model.unused_layer", "true")


def test_nonfinite_loss_skips_steps_then_stops(tmp_path, doctor_log):
    with pytest.raises(DoctorError, match="3 optimiser steps in a row had a non-finite loss"):
        toy_cli(tmp_path, "--model.nan_loss", "true", "--run.doctor.max_nonfinite_in_row", "3")
    assert "step 0: non-finite loss; optimiser step skipped (1 in a row" in doctor_log.text


def test_stalled_loss_warns_with_lr(tmp_path):
    with pytest.warns(UserWarning, match=r"loss has not moved in 6 steps .* at lr 1e-12"):
        toy_cli(tmp_path, "--model.optim.lr", "1e-12", "--model.optim.warmup_epochs", "0",
                "--run.doctor.stall_steps", "6", epochs=3)


def test_tiny_loss_term_share_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"loss term 'tiny' is 0\.\d% of the total \(under 5%\)"):
        toy_cli(tmp_path, "--model.tiny_term_weight", "0.001", "--run.doctor.share_warmup_steps", "2")
    rows = list(csv.DictReader((tmp_path / "runs" / "toy" / "version_0" / "metrics.csv").open()))
    for name in ("share/tiny_step", "share/supcon_step", "share/tiny_epoch", "share/supcon_epoch"):
        assert name in rows[0]
    epoch = [row for row in rows if row["share/supcon_epoch"]]
    assert len(epoch) == 2  # one mean per epoch
    for row in epoch:  # the epoch means of the shares are shares
        assert float(row["share/tiny_epoch"]) + float(row["share/supcon_epoch"]) == pytest.approx(1.0)
        assert 0 < float(row["share/tiny_epoch"]) < 0.05


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


def test_parameter_counts_printed(tmp_path, doctor_log):
    toy_cli(tmp_path, epochs=1)
    assert "[doctor] parameters: total 416, trainable 416, frozen 0" in doctor_log.text


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


# --- the toy task in a Trainer: fp16 with a GradScaler ----------------------------------------------
def fit_toy(doctor: Doctor, scaler: torch.amp.GradScaler | None = None, steps: int = 12,
            probe: L.Callback | None = None, per_class: int = 24, **task) -> tuple[L.Trainer, ToyTask]:
    """Train the toy task for `steps` optimiser steps (per_class / 8 an epoch), `16-mixed` on CPU
    with `scaler`."""
    plugins = [MixedPrecision("16-mixed", "cpu", scaler)] if scaler is not None else []
    callbacks = [doctor, probe] if probe else [doctor]
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, plugins=plugins, callbacks=callbacks,
                        logger=False, log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    model = ToyTask(optim={"lr": 0.01, "warmup_epochs": 0}, **task)
    trainer.fit(model, ToyDataModule(per_class=per_class))
    return trainer, model


class Recorder(L.Callback):
    """After the doctor: what it has counted and the scale, at each optimiser step."""

    def __init__(self, doctor: Doctor, scaler: torch.amp.GradScaler | None = None):
        self.doctor, self.scaler = doctor, scaler
        self.counted: list[int] = []
        self.scales: list[float] = []
        self.weights: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.counted.append(self.doctor.nonfinite_steps)
        self.weights.append(pl_module.net[0].weight.detach().clone())
        if self.scaler is not None:
            self.scales.append(self.scaler.get_scale())


def test_step_outcome_tells_scaler_skips_from_failures():
    t, f = torch.tensor(True), torch.tensor(False)
    above, floor = torch.tensor(2.0**16), torch.tensor(1.0)
    cases = {  # (loss finite, grads finite, scale): (failure, scaler skip)
        (t, t, None): (False, False), (f, t, None): (True, False), (t, f, None): (True, False),
        (t, t, above): (False, False), (t, f, above): (False, True),  # the scaler's overflow probe
        (f, f, above): (True, False),  # a non-finite loss is never the scaler's business
        (t, f, floor): (True, False),  # at the floor the scale no longer explains the overflow
    }
    for (loss, grads, scale), expected in cases.items():
        failure, skip = step_outcome(loss, grads, scale, min_scale=1.0)
        assert (bool(failure), bool(skip)) == expected, (loss, grads, scale)


@pytest.mark.parametrize("cadence", [{}, {"host_check_steps": 1, "host_check_every": 5}])
def test_fp16_overflow_at_the_start_is_skipped_by_the_scaler_not_stopped(cadence, doctor_log):
    # 2^24 overflows fp16 gradients: the scaler skips and halves the scale for the first 8 steps,
    # more in a row than max_nonfinite_in_row, and the run must train on.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    doctor = Doctor(DoctorConfig(max_nonfinite_in_row=3, **cadence))
    recorder = Recorder(doctor, scaler)
    trainer, model = fit_toy(doctor, scaler, steps=12, probe=recorder)
    assert trainer.global_step == 12
    skipped = [i for i in range(11) if recorder.scales[i + 1] < recorder.scales[i]]  # the scaler's own account
    assert len(skipped) > 3
    assert doctor.scaler_skips == len(skipped)
    assert doctor.nonfinite_steps == 0 and doctor.nonfinite_in_row == 0
    assert float(trainer.callback_metrics["doctor/scaler_skips"]) == len(skipped)
    initial = recorder.weights[0]
    assert all(torch.equal(recorder.weights[i + 1], initial) for i in skipped)  # skipped steps changed nothing
    assert not torch.equal(model.net[0].weight.detach(), initial)  # the later steps trained
    assert "the GradScaler skips them" in doctor_log.text


def test_nonfinite_loss_under_a_scaler_still_stops():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    doctor = Doctor(DoctorConfig(max_nonfinite_in_row=3))
    with pytest.raises(DoctorError, match="3 optimiser steps in a row had a non-finite loss"):
        fit_toy(doctor, scaler, nan_loss=True)
    assert doctor.scaler_skips == 0 and doctor.nonfinite_steps == 3


def test_overflow_at_the_scale_floor_stops():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    doctor = Doctor(DoctorConfig(max_nonfinite_in_row=3, scaler_min_scale=2.0**30))  # every scale is at the floor
    with pytest.raises(DoctorError, match="3 optimiser steps in a row had a non-finite gradients"):
        fit_toy(doctor, scaler)
    assert doctor.scaler_skips == 0


# --- host checks every few steps --------------------------------------------------------------------
def test_host_check_cadence():
    assert [s for s in range(12) if host_check_due(s, first=2, every=3)] == [0, 1, 3, 6, 9]
    assert all(host_check_due(s, first=0, every=1) for s in range(5))
    with pytest.raises(ConfigError, match="host_check_every"):
        DoctorConfig(host_check_every=0)


def inject_nan(monkeypatch, steps: set[int], into_gradients: bool) -> None:
    """Make the toy loss NaN at optimiser steps `steps`: through its gradients (the weights become
    NaN once such a step is applied), or as a NaN constant added to it (gradients stay finite)."""
    original = ToyTask.training_losses

    def training_losses(self, batch):
        terms = original(self, batch)
        if self.global_step in steps:
            nan = torch.tensor(float("nan"))
            terms["supcon"] = terms["supcon"] * nan if into_gradients else terms["supcon"] + nan
        return terms

    monkeypatch.setattr(toy_recipe.ToyTask, "training_losses", training_losses)


def test_nan_between_host_checks_is_counted_at_the_next_check(monkeypatch, doctor_log):
    inject_nan(monkeypatch, {4}, into_gradients=False)  # host checks at steps 0, 1, 3, 6, 9
    doctor = Doctor(DoctorConfig(host_check_steps=2, host_check_every=3))
    recorder = Recorder(doctor)
    trainer, _ = fit_toy(doctor, steps=9, probe=recorder)
    assert trainer.global_step == 9  # one non-finite step does not stop a run
    assert recorder.counted == [0, 0, 0, 0, 0, 0, 1, 1, 1]  # read at step 6, not before
    assert doctor.nonfinite_steps == 1 and doctor.nonfinite_in_row == 0
    assert "1 non-finite step(s) before step 6 found at a host check, 1 of them applied" in doctor_log.text


def test_nan_at_a_host_check_is_skipped_there(monkeypatch):
    inject_nan(monkeypatch, {3}, into_gradients=True)  # step 3 is a host check: skipped, weights stay finite
    doctor = Doctor(DoctorConfig(host_check_steps=2, host_check_every=3))
    _, model = fit_toy(doctor, steps=9)
    assert doctor.nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_weights_between_host_checks_stop_before_a_checkpoint(tmp_path, monkeypatch):
    # Step 2 ends the first epoch and is no host check: its NaN gradients are applied (only a read
    # could skip them). The reads before validation and at the epoch end find the NaN weights and
    # stop the run before best.ckpt or last.ckpt is written, one failed step short of the rule.
    inject_nan(monkeypatch, {2}, into_gradients=True)
    with pytest.raises(DoctorError, match="parameters are non-finite after 1 non-finite step"):
        toy_cli(tmp_path, "--run.doctor.host_check_steps", "1", "--run.doctor.host_check_every", "100")
    assert not list(tmp_path.glob("runs/**/*.ckpt"))


def test_nan_weights_between_host_checks_stop_by_the_in_a_row_rule(monkeypatch):
    inject_nan(monkeypatch, {7}, into_gradients=True)  # the NaN weights make every later step fail
    doctor = Doctor(DoctorConfig(max_nonfinite_in_row=3, host_check_steps=2, host_check_every=3))
    recorder = Recorder(doctor)
    message = r"3 optimiser steps in a row had a non-finite loss \(lr .*\); 2 of them were applied"
    with pytest.raises(DoctorError, match=message):
        fit_toy(doctor, steps=12, probe=recorder, per_class=48)  # 6 steps an epoch: no epoch end in between
    assert len(recorder.counted) == 9  # stopped at the host check of step 9 (steps 7, 8, 9 failed), before it stepped
    assert doctor.nonfinite_steps == 3
