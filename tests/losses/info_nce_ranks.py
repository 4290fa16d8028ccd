"""One InfoNCE step over a fixed batch of 8 pairs, run by test_info_nce.py as

    python info_nce_ranks.py OUT 1        # one process, the whole batch
    python info_nce_ranks.py OUT 2        # two gloo processes, each half of the batch

Each rank writes OUT/w{world}_r{rank}.pt: its loss and the gradient of the shared linear maps after
averaging over ranks (what DDP's all-reduce gives). Both runs use a same-frame negative mask built
from the gathered frame ids, so the labels' rank offset is exercised with masking too.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sensorium.losses.contrastive import gather_rows, info_nce

N, D_IN, D = 8, 6, 4


def run(rank: int, world: int, out: Path) -> None:
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank, world_size=world)
    torch.manual_seed(0)
    left, right = torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)  # the same init on every rank
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, D_IN, generator=g), torch.randn(N, D_IN, generator=g)
    frame = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # pairs of rows from one frame: not each other's negatives
    share = N // world
    rows = slice(rank * share, (rank + 1) * share)
    a = torch.nn.functional.normalize(left(x[rows]), dim=-1)
    b = torch.nn.functional.normalize(right(y[rows]), dim=-1)
    mask = frame[rows, None] == gather_rows(frame[rows])[None, :]  # (N / world, N)
    loss = info_nce(a, b, temperature=0.5, negative_mask=mask, gather=True)
    loss.backward()
    grads = {}
    for name, module in (("left", left), ("right", right)):
        for pname, p in module.named_parameters():
            grad = p.grad.clone()
            if world > 1:
                dist.all_reduce(grad)
                grad /= world  # DDP averages gradients over ranks
            grads[f"{name}.{pname}"] = grad
    torch.save({"loss": loss.detach(), "grads": grads}, out / f"w{world}_r{rank}.pt")
    if world > 1:
        # Both ranks done before either closes its connections: a rank that tore down while the
        # other still talked to it aborted ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    out, world = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    if world == 1:
        run(0, 1, out)
    else:
        mp.spawn(run, args=(world, out), nprocs=world)
