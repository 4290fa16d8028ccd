"""info_nce with a negative mask, extra negatives from a queue, and gathering across ranks: two gloo
processes with half a batch each give the loss and gradients of one process on the whole batch."""

import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sensorium.losses.contrastive import NegativeQueue, info_nce

SCRIPT = Path(__file__).with_name("info_nce_ranks.py")


def _manual(a, b, t, excluded):
    """Mean of both directions' cross-entropy with the excluded negatives removed (by hand)."""
    logits = a @ b.T / t
    losses = []
    for lg in (logits, logits.T):
        rows = []
        for i in range(len(a)):
            keep = [j for j in range(len(a)) if j == i or not excluded[i, j]]
            rows.append(-(lg[i, i] - torch.logsumexp(lg[i, keep], dim=0)))
        losses.append(torch.stack(rows).mean())
    return 0.5 * (losses[0] + losses[1])


def test_the_negative_mask_removes_exactly_the_masked_pairs():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[2, 3] = mask[3, 2] = True
    mask[4, 4] = True  # a positive in the mask is ignored: the positive always counts
    torch.testing.assert_close(info_nce(a, b, 0.2, negative_mask=mask), _manual(a, b, 0.2, mask))
    torch.testing.assert_close(info_nce(a, b, 0.2, negative_mask=torch.zeros(6, 6, dtype=torch.bool)),
                               info_nce(a, b, 0.2))
    # everything masked: only the positive is left, the loss is 0 (and finite)
    assert float(info_nce(a, b, 0.2, negative_mask=torch.ones(6, 6, dtype=torch.bool))) == 0.0


def test_a_duplicated_row_is_no_longer_a_hard_negative_once_masked():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    a[1] = a[0]  # two points of one patch: identical targets
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    plain, masked = info_nce(a, a, 0.1), info_nce(a, a, 0.1, negative_mask=mask)
    # the duplicate costs log 2 in each of its two rows, in both directions: mean log(2) / 2 over 4 rows
    assert abs(float(plain - masked) - math.log(2) / 2) < 0.01 and float(masked) < 0.01


def test_queued_negatives_raise_the_loss():
    torch.manual_seed(2)
    a, b = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    queue = NegativeQueue(4, size=6)
    queue.push(b[:4])
    queue.push(b[4:] * -1)
    assert queue.rows().shape == (5, 4)
    queue.push(torch.zeros(3, 4))  # FIFO: the oldest two rows go
    assert queue.rows().shape == (6, 4) and int(queue.pointer) == 2
    extra = F.normalize(torch.randn(6, 4), dim=-1)
    assert float(info_nce(a, b, 0.2, negatives_b=extra, negatives_a=extra)) > float(info_nce(a, b, 0.2))


def _run(out: Path, world: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(world)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    _run(tmp_path, 1)
    _run(tmp_path, 2)
    single = torch.load(tmp_path / "w1_r0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"w2_r{r}.pt", weights_only=True) for r in (0, 1)]
    # each rank's loss is the mean over its own rows of the global-batch loss: their mean is the whole's
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single["loss"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"])  # the halves differ: the test can fail
    norm = torch.sqrt(sum(g.pow(2).sum() for g in single["grads"].values()))
    assert norm > 1e-3
    for rank in ranks:
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
