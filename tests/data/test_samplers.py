import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.data.samplers import ClassBalancedBatchSampler, EpochSampler
from sensorium.errors import DataError


@st.composite
def label_sets(draw):
    m = draw(st.integers(2, 4))
    counts = draw(st.lists(st.integers(m, 40), min_size=2, max_size=12))
    P = draw(st.integers(2, len(counts)))
    labels = np.repeat(np.arange(len(counts)), counts)
    perm = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(labels))
    return labels[perm], P, m


@settings(max_examples=60, deadline=None)
@given(label_sets(), st.integers(1, 4), st.integers(0, 5))
def test_every_batch_has_p_classes_with_m_distinct_samples(data, world, epoch):
    labels, P, m = data
    sampler = ClassBalancedBatchSampler(labels, P, m, num_replicas=world, rank=0, seed=7)
    sampler.set_epoch(epoch)
    batches = sampler.global_batches()
    assert len(batches) == sampler.batches_per_epoch * world and len(sampler) == sampler.batches_per_epoch
    for batch in batches:
        assert len(batch) == len(set(batch)) == P * m  # no sample twice: no trivial positives
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == P and (counts == m).all()


@settings(max_examples=40, deadline=None)
@given(label_sets(), st.integers(2, 4))
def test_ranks_partition_the_single_process_sequence(data, world):
    labels, P, m = data
    single = ClassBalancedBatchSampler(labels, P, m, num_replicas=world, rank=0, seed=3).global_batches()
    per_rank = [list(ClassBalancedBatchSampler(labels, P, m, num_replicas=world, rank=r, seed=3)) for r in range(world)]
    one_process = ClassBalancedBatchSampler(labels, P, m, seed=3)
    # Equal step counts on every rank (no DDP hang), and the same as one process's epoch.
    assert all(len(b) == len(per_rank[0]) == len(one_process) for b in per_rank)
    interleaved = [per_rank[r][i] for i in range(len(per_rank[0])) for r in range(world)]
    assert interleaved == single
    if len(per_rank[0]) > 0:
        assert per_rank[0][0] != per_rank[1][0] or P * m == len(labels)  # distinct batches per rank


@settings(max_examples=30, deadline=None)
@given(label_sets())
def test_small_classes_are_drawn_as_often_as_large_ones(data):
    labels, P, m = data
    sampler = ClassBalancedBatchSampler(labels, P, m, seed=1, batches_per_epoch=60)
    visits = np.zeros(labels.max() + 1, dtype=int)
    for batch in sampler.global_batches():
        visits[np.unique(labels[batch])] += 1
    assert visits.max() - visits.min() <= 2  # shuffled rounds: balanced regardless of class sizes


def test_samples_used_before_reuse_and_epochs_differ():
    labels = np.repeat([0, 1, 2], [6, 6, 30])
    sampler = ClassBalancedBatchSampler(labels, 3, 2, seed=0, batches_per_epoch=3)
    used = [i for batch in sampler.global_batches() for i in batch if labels[i] == 0]
    assert sorted(used) == list(range(6))  # 3 batches x 2 draws: each class-0 sample exactly once
    first = sampler.global_batches()
    sampler.set_epoch(1)
    assert sampler.global_batches() != first
    assert sampler.sampler is sampler  # Lightning calls batch_sampler.sampler.set_epoch(epoch)


def test_rejects_classes_too_small_for_positive_pairs():
    with pytest.raises(ValueError, match=r"fewer than samples_per_class=4 samples \(class: count\) \{1: 3\}"):
        ClassBalancedBatchSampler(np.array([0] * 5 + [1] * 3), 2, 4)
    with pytest.raises(ValueError, match="samples_per_class: must be >= 2"):
        ClassBalancedBatchSampler(np.array([0, 0, 1, 1]), 2, 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 60), st.integers(1, 4), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 9)),
       st.integers(0, 3))
def test_epoch_sampler_gives_every_rank_one_process_epoch_of_distinct_samples(length, batch, world, per_epoch, epoch):
    if length < batch * world:
        with pytest.raises(DataError, match="do not fill one batch"):
            EpochSampler(length, batch, world=world, batches_per_epoch=per_epoch)
        return
    ranks = [EpochSampler(length, batch, rank=r, world=world, seed=5, batches_per_epoch=per_epoch) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(epoch)
    single = EpochSampler(length, batch, seed=5, batches_per_epoch=per_epoch)
    steps = per_epoch or length // batch
    orders = [list(s) for s in ranks]
    assert all(len(o) == steps * batch == len(single) for o in orders)  # the epoch length ignores the world
    for step in range(steps):
        together = [i for o in orders for i in o[step * batch:(step + 1) * batch]]
        if world * batch * (step + 1) <= length:  # within the first pass: one step's ranks never share a sample
            assert len(set(together)) == len(together)
    if per_epoch is None and world == 1:  # one pass: a shuffled epoch without repeats
        assert len(set(orders[0])) == len(orders[0])


def test_epoch_sampler_matches_distributed_sampler_on_one_rank():
    from torch.utils.data import DistributedSampler

    reference = DistributedSampler(range(23), num_replicas=1, rank=0, shuffle=True, seed=4, drop_last=True)
    ours = EpochSampler(23, 5, seed=4)
    for epoch in (0, 3):
        reference.set_epoch(epoch)
        ours.set_epoch(epoch)
        assert list(ours) == list(reference)[:20]
