"""The rank-aware DataModule base: evaluation shards with equal batch counts that together cover the
dataset once, in order; the checks that fail before any step."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.data.datamodule import SensoriumDataModule, eval_batches, shard_groups
from sensorium.errors import ConfigError, DataError


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.integers(2, 17), st.integers(1, 8))
def test_eval_batches_cover_the_dataset_in_order_with_equal_counts_per_rank(length, batch, world):
    if length < world:
        with pytest.raises(ConfigError, match="fewer than the"):
            eval_batches(length, batch, 0, world)
        return
    shards = [eval_batches(length, batch, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # the same number of batches on every rank: no collective waits
    flat = [i for s in shards for b in s for i in b]
    assert flat == list(range(length))  # every sample once, gathered in rank order = dataset order
    assert all(0 < len(b) <= batch for s in shards for b in s)


def test_eval_batches_of_one_that_cannot_be_equal_are_an_error_naming_the_option():
    with pytest.raises(ConfigError, match="data.eval_batch_size"):
        eval_batches(5, 1, 0, 2)  # blocks of 3 and 2 samples cannot both be 3 batches of one
    assert [len(eval_batches(5, 2, r, 2)) for r in (0, 1)] == [2, 2]


@settings(max_examples=100, deadline=None)
@given(st.integers(8, 120), st.integers(2, 16), st.integers(1, 4))
def test_grouped_batches_keep_whole_groups_and_every_sample(length, size, world):
    groups = [list(range(i, min(i + size, length))) for i in range(0, length, size)]
    shards = [shard_groups(groups, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert sorted(i for s in shards for b in s for i in b) == list(range(length))
    # Whole groups stay whole: only a rank's last batch may hold the leftovers of several groups.
    assert all(b in groups for s in shards for b in s[:-1])
    if len(groups) % world == 0:
        assert sorted(b for s in shards for b in s) == sorted(groups)


class _Fake:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world


class _Numbers(SensoriumDataModule):
    def __init__(self, n, batch_size=4, batches_per_epoch=None):
        super().__init__()
        self.n, self.batch_size, self.batches_per_epoch, self.where = n, batch_size, batches_per_epoch, "numbers"
        self.collate_fn = None

    def split_sizes(self):
        return {"train": self.n, "val": 3, "test": 1}


def test_train_loader_gives_every_rank_one_process_epoch():
    data = [{"x": torch.tensor(i)} for i in range(40)]
    lengths = []
    for world in (1, 2, 4):
        dm = _Numbers(40, batches_per_epoch=3)
        dm.trainer = _Fake(world - 1, world)
        lengths.append(len(dm.train_loader(data)))
    assert lengths == [3, 3, 3]


def test_checks_before_any_step_name_the_option():
    dm = _Numbers(40, batch_size=4, batches_per_epoch=2)
    dm.trainer = _Fake(0, 2)
    with pytest.raises(ConfigError, match="trainer.accumulate_grad_batches"):
        dm.check_fits("fit", accumulate_grad_batches=3)
    dm.check_fits("fit", accumulate_grad_batches=2)
    dm.trainer = _Fake(0, 4)
    with pytest.raises(ConfigError, match="the val split has 3 sample"):
        dm.check_fits("fit")
    small = _Numbers(7, batch_size=4)
    small.trainer = _Fake(0, 2)
    with pytest.raises(DataError, match="numbers: the train split has 7 sample.*data.batch_size=4 on each of 2"):
        small.check_fits("fit")


def test_a_fit_does_not_need_the_test_split_to_fill_the_ranks():
    dm = _Numbers(40, batch_size=4)
    dm.trainer = _Fake(0, 2)
    dm.check_fits("fit")  # one test sample, two ranks: the fit never reads it
    with pytest.raises(ConfigError, match="the test split has 1 sample"):
        dm.check_fits("test")
