"""The reading rules a task declares (`ReadingRules`): each fires once, with its message, on a
synthetic sequence of logged values fed to the Doctor's hooks (no training)."""

import warnings
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from sensorium.engine.doctor import Band, Doctor, DoctorConfig, ReadingRules, band_message, jump_message
from sensorium.errors import ConfigError, DoctorError


def _trainer():
    return SimpleNamespace(global_step=0, optimizers=[], sanity_checking=False, current_epoch=0, should_stop=False,
                           state=SimpleNamespace(fn=TrainerFn.FITTING), callback_metrics={},
                           _logger_connector=SimpleNamespace(should_update_logs=False))


def _task(rules: ReadingRules | None, monitor: str = "val/score", mode: str = "min"):
    return SimpleNamespace(reading_rules=rules, doctor_values={}, loss_terms={}, device=torch.device("cpu"),
                           monitor=monitor, monitor_mode=mode, log_dict=lambda *a, **k: None)


def _feed(doctor: Doctor, task, losses, values=None, terms=None) -> SimpleNamespace:
    """One training batch per loss (with its `doctor_values` and weighted `loss_terms`), then the epoch end."""
    trainer = _trainer()
    for step, loss in enumerate(losses):
        trainer.global_step = step
        task.doctor_values = {k: torch.tensor(v[step]) for k, v in (values or {}).items()}
        task.loss_terms = {k: torch.tensor(v[step]) for k, v in (terms or {}).items()}
        doctor.on_train_batch_end(trainer, task, torch.tensor(loss), None, step)
    doctor.on_train_epoch_end(trainer, task)
    return trainer


def _doctor(collect: bool = False) -> Doctor:
    # every step a host check, so the sequence is read as it goes
    return Doctor(DoctorConfig(stall_steps=0, host_check_steps=1000, share_warmup_steps=3), collect=collect)


RULES = ReadingRules(loss_jump=2.0, jump_window=3, ranges={"loss_ratio": Band(0.5, 1.5, "Rebalance.")},
                     share_range=Band(0.35, 0.65, "Adjust the weights."), no_progress_epochs=3, source="the note")


def test_a_loss_jump_over_the_window_stops_the_run_once():
    losses = [1.0, 0.9, 0.8, 0.8, 0.7, 0.7] + [2.0, 2.1, 2.2]
    # steps 2-4 against 5-7: 0.767 -> 1.6 (2.09x), the first window pair over the factor
    with pytest.raises(DoctorError, match=r"the loss jumped 2\.09x \(mean over 3 steps: 0\.7667 -> 1\.6, up to step 7\)"
                                          r", over the 2x limit \(the note\)"):
        _feed(_doctor(), _task(RULES), losses)
    doctor = _doctor(collect=True)  # `sensorium doctor` collects instead: one message, however long the rise
    _feed(doctor, _task(RULES), losses + [2.5, 5.0, 9.0, 20.0])
    assert len([p for p in doctor.problems if "jumped" in p]) == 1


def test_a_rise_under_the_factor_and_a_step_jump_inside_a_smooth_window_pass():
    doctor = _doctor(collect=True)
    _feed(doctor, _task(RULES), [1.0, 1.0, 1.0, 1.9, 1.9, 1.9, 1.0, 3.5, 1.0])  # 1.9x; one spike averaged out
    assert doctor.problems == []
    step_to_step = ReadingRules(loss_jump=2.0, jump_window=1)
    assert jump_message(1.0, 3.5, 7, step_to_step, 1e-3).startswith("the loss jumped 3.50x (step to step")
    assert jump_message(1.0, 1.9, 7, step_to_step, 1e-3) is None
    assert jump_message(-1.0, 3.0, 7, step_to_step, 1e-3) is None  # no ratio for a non-positive loss


def test_a_value_leaving_its_band_warns_once_with_the_advice():
    ratio = [1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.2, 0.2]  # running average falls under 0.5
    doctor = _doctor()
    with pytest.warns(UserWarning, match=r"loss_ratio is 0\.\d+ on average, under its band \[0\.5, 1\.5\] "
                                         r"\(the note\)\. Rebalance\."):
        _feed(doctor, _task(RULES), [1.0] * len(ratio), values={"loss_ratio": ratio})
    assert len([w for w in doctor.warnings if "loss_ratio" in w]) == 1
    assert band_message("loss_ratio", 1.2, RULES.ranges["loss_ratio"], RULES) is None


def test_a_share_outside_the_tasks_band_warns_once_instead_of_the_default_5_95():
    static = [0.8] * 8  # 80% of the total: inside the doctor's default 5-95%, outside the task's 35-65%
    terms = {"static": static, "dynamic": [1 - s for s in static]}
    doctor = _doctor()
    with pytest.warns(UserWarning, match=r"loss term 'static' is 80\.0% of the total \(over 65%, the note\); "
                                         r"Adjust the weights\."):
        _feed(doctor, _task(RULES), [1.0] * 8, terms=terms)
    # one message per term, however many steps stay outside
    assert [w.split(" is ")[0] for w in doctor.warnings] == ["loss term 'static'", "loss term 'dynamic'"]
    assert "'dynamic' is 20.0% of the total (under 35%, the note)" in doctor.warnings[1]
    with warnings.catch_warnings():  # without rules the default band holds: nothing to say
        warnings.simplefilter("error")
        _feed(_doctor(), _task(None), [1.0] * 8, terms=terms)


@pytest.mark.parametrize("stop", [False, True])
def test_no_val_progress_for_n_epochs_warns_once_or_stops(stop):
    rules = ReadingRules(no_progress_epochs=3, no_progress_stop=stop, source="the note")
    doctor, task, trainer = _doctor(), _task(rules, "val/score", "min"), _trainer()
    scores = [1.0, 0.8, 0.9, 0.85, 0.81, 0.9, 0.95]  # best 0.8 at epoch 1; epoch 4 is 3 epochs later
    stopped = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch, score in enumerate(scores):
            trainer.current_epoch, trainer.callback_metrics = epoch, {"val/score": torch.tensor(score)}
            doctor.on_validation_end(trainer, task)
            stopped.append(trainer.should_stop)
    assert stopped == [False] * 4 + [stop] * 3
    messages = [str(w.message) for w in caught if "has not improved" in str(w.message)]
    assert messages == ["[doctor] val/score has not improved for 3 epochs (best 0.8 at epoch 1, 0.81 at epoch 4; "
                        "limit 3 (the note))" + ("; stopping (checkpoints kept)." if stop else
                                                  ". Check the lr, the data and the code (or stop the run).")]


def test_progress_follows_the_monitor_mode_and_sanity_checks_do_not_count():
    rules = ReadingRules(no_progress_epochs=2)
    doctor, task, trainer = _doctor(), _task(rules, "val/acc", "max"), _trainer()
    for epoch, acc in enumerate([0.1, 0.2, 0.3, 0.4]):  # rising accuracy is progress
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/acc": torch.tensor(acc)}
        doctor.on_validation_end(trainer, task)
    trainer.sanity_checking, trainer.current_epoch = True, 10
    doctor.on_validation_end(trainer, task)
    assert doctor.warnings == []


def test_rules_validate_their_bands():
    with pytest.raises(ConfigError, match="share_range"):
        ReadingRules(share_range=Band(0.65, 0.35))
    with pytest.raises(ConfigError, match="jump_window"):
        ReadingRules(jump_window=0)


def test_with_several_ranks_a_jump_on_any_rank_stops_every_rank():
    """Each rank reads the largest ratio of all (a max all-reduce at the shared host checks), so
    the ranks stop together: one rank raising alone would leave the others waiting."""
    trainer = _trainer()

    class OtherRankJumped:  # the other rank's window pair at step 7 rose 3x
        def reduce(self, tensor, reduce_op):
            assert reduce_op == "max"
            return torch.maximum(tensor, torch.tensor([3.0 if trainer.global_step == 7 else 0.0]))

    doctor, task = _doctor(collect=True), _task(RULES)
    trainer.world_size, trainer.strategy = 2, OtherRankJumped()
    for step, loss in enumerate([1.0] * 8):  # this rank's loss is flat
        trainer.global_step = step
        doctor.on_train_batch_end(trainer, task, torch.tensor(loss), None, step)
    assert doctor.problems == [("the loss jumped 3.00x on another rank, over the 2x limit (the note) "
                                "(this rank: 1.00x); stopping.")]
