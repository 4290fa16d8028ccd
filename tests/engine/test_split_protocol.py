"""Val chooses, test reports: a fit refuses validation loaders that read the test split, and every
recipe's task chooses its checkpoint and early stopping on a val metric."""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import toy_cli
from torch.utils.data import DataLoader, TensorDataset

from sensorium.data.datamodule import check_val_reads
from sensorium.errors import ConfigError


def _tagged(split: str) -> DataLoader:
    loader = DataLoader(TensorDataset(torch.zeros(2)))
    loader.split = split
    return loader


def test_validation_may_read_train_and_val_banks_but_not_test():
    check_val_reads([_tagged("train"), _tagged("val"), _tagged("train + val")], "data")
    check_val_reads(DataLoader(TensorDataset(torch.zeros(2))), "data")  # built elsewhere: not known, not refused
    check_val_reads(None, "data")
    with pytest.raises(ConfigError, match="reads the 'test' split"):
        check_val_reads([_tagged("train"), _tagged("test")], "data")
    with pytest.raises(ConfigError, match="never test"):
        check_val_reads(_tagged("val + test"), "data")


def test_a_fit_that_validates_on_test_stops_before_choosing(tmp_path):
    with pytest.raises(ConfigError, match="validation loader reads the 'test' split"):
        toy_cli(tmp_path, "--data.validate_on_test", "true", epochs=1)
    assert not list((tmp_path / "runs").rglob("best.ckpt"))


def test_the_toy_fit_validates_on_val_and_tests_on_test(tmp_path):
    cli = toy_cli(tmp_path, epochs=1)
    assert [loader.split for loader in cli.trainer.val_dataloaders] == ["train", "val"]
    assert [loader.split for loader in cli.datamodule.test_dataloader()] == ["train", "test"]


TASK_MODULES = ["sensorium.recipes.welding.task", "sensorium.recipes.tactile.task", "sensorium.recipes.cardiac.task",
                "sensorium.recipes.rgbpc.task", "sensorium.recipes.rgbpc.distil_task",
                "sensorium.recipes.doppler.task", "sensorium.recipes.doppler.dit_task"]


@pytest.mark.parametrize("module_name", TASK_MODULES)
def test_every_task_chooses_on_a_val_metric(module_name):
    """best.ckpt and early stopping both follow `monitor` (sensorium.engine.lightning_cli)."""
    from sensorium.engine.task import SensoriumTask

    module = importlib.import_module(module_name)
    tasks = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, SensoriumTask) and obj.__module__ == module.__name__]
    assert tasks, f"no SensoriumTask in {module.__name__}"
    for task in tasks:
        assert task.monitor.startswith("val/"), f"{task.__qualname__} chooses on {task.monitor}"
