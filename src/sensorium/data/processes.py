"""Process pools for the data writers (synth, prepare): spawned workers that each use one thread.

Why one thread each: numpy's OpenBLAS (and torch's OpenMP pool, where a worker imports torch) start
one thread per core in every process, so W workers on W cores run W x W threads that spin-wait on
each other. On 2 idle cores the cardiac generator's 96 demo cases took 82 s with 2 workers and 37 s
with the same 2 workers held to one thread each (the output is the same: the work is per case).
Why spawn: the parent may hold torch / OpenMP threads, which fork does not copy safely.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread_per_process() -> None:
    """Hold this process's numerical libraries to one thread: the ones already loaded through
    threadpoolctl, the ones loaded later (torch, on its first import) through the environment."""
    from threadpoolctl import threadpool_limits

    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    threadpool_limits(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes, each held to one thread (see the module docstring)."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=one_thread_per_process)
