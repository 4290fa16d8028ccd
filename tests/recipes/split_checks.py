"""What every recipe's datamodule must show for val-chooses / test-reports: validation loaders
read train and val only, the test loaders read test, and val and test share no sample by id or
by content (the doctor's fingerprints)."""

from __future__ import annotations

from sensorium.data.datamodule import check_val_reads


def as_list(loaders) -> list:
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def assert_val_and_test_held_apart(datamodule) -> None:
    datamodule.setup("fit")
    val = as_list(datamodule.val_dataloader())
    check_val_reads(val, "data")
    assert "val" in {loader.split for loader in val}
    datamodule.setup("test")
    assert "test" in {loader.split for loader in as_list(datamodule.test_dataloader())}
    prints = datamodule.split_fingerprints()
    assert prints["val"] and prints["test"]
    assert not set(prints["val"]) & set(prints["test"])
    assert not set(prints["val"].values()) & set(prints["test"].values())
