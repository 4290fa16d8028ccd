"""sensorium's messages: standard `logging` under the `sensorium` logger, shown on global rank zero only.

Every process of a torchrun / SLURM / Lightning-DDP launch runs the same code; a `print` in a
datamodule's `setup` or the engine printed each message once per rank. Library modules log with
`logging.getLogger(__name__)`; `setup()` (called by the `sensorium` command and the engine's CLI)
attaches one handler that writes INFO and above to standard output, prefixed by nothing (the
messages carry their own `[recipe]` tags), and drops records on ranks other than zero. Warnings
and errors of other ranks are kept: a problem on rank 3 must not disappear.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "sensorium"
# The environment variables launchers set for a process's global rank (torchrun, SLURM, LSF/JSM),
# as Lightning reads them; a process group, once initialised, is asked directly.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def global_rank() -> int:
    """This process's global rank: the process group's when one is initialised, else the launcher's
    environment (0 for a single process). Lightning's spawn children set LOCAL_RANK and NODE_RANK."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return int(os.environ.get("LOCAL_RANK", "0")) + int(os.environ.get("NODE_RANK", "0"))


class RankZeroFilter(logging.Filter):
    """Passes every record of rank zero, and warnings and errors of the other ranks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or global_rank() == 0


class _StdoutHandler(logging.StreamHandler):
    """Writes to the *current* sys.stdout (pytest's capture and redirections replace it after the
    handler is made)."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def setup(level: int = logging.INFO) -> None:
    """Attach the rank-zero stdout handler to the `sensorium` logger (once)."""
    logger = logging.getLogger(ROOT)
    if any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        return
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RankZeroFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a root handler configured by the user would print each line twice
