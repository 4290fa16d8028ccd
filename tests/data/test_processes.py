import os

import numpy as np
from threadpoolctl import threadpool_info

from sensorium.data.processes import process_pool


def test_pool_workers_run_one_thread_each(monkeypatch):
    # What the workers would inherit on a 2-core machine (the test session itself runs at 1).
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "2")
    with process_pool(1) as pool:
        assert pool.submit(os.getenv, "OMP_NUM_THREADS").result() == "1"
        # The worker loads numpy (and its BLAS) only after its initializer, as a synth job does.
        assert pool.submit(np.ones, 3).result().sum() == 3
        libraries = pool.submit(threadpool_info).result()
    assert any(lib["internal_api"] in ("openblas", "mkl", "blis") for lib in libraries), libraries
    assert {lib["num_threads"] for lib in libraries} == {1}, libraries
