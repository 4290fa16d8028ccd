"""One toy fit per rank for test_run_dir.py, launched by torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m run_dir_ranks OUT

Rank r works in OUT/rank{r}, so the test can show a rank run directories that the others do not
see, as ranks on different nodes or started at different times would. Each rank writes a file into
its trainer.default_root_dir and records in OUT/rank{r}.json where its run's files go.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
from helpers import TOY
from lightning.pytorch.callbacks import ModelCheckpoint

from sensorium.engine.callbacks import ExportFinalWeights


class RecordRunDir(L.Callback):
    def __init__(self, out: str):
        super().__init__()
        self.out = Path(out)

    def on_fit_start(self, trainer, pl_module) -> None:
        run = Path(trainer.default_root_dir)
        # What any rank writing into its run would do (eval files, plots): make the folder, write.
        run.mkdir(parents=True, exist_ok=True)
        (run / f"written_by_rank{trainer.global_rank}.txt").write_text("here\n")
        where = {"default_root_dir": str(run.resolve()),
                 "checkpoints": [str(Path(c.dirpath).resolve()) for c in trainer.callbacks if isinstance(c, ModelCheckpoint)],
                 "export": [str(c.export_dir.resolve()) for c in trainer.callbacks if isinstance(c, ExportFinalWeights)]}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(where))


if __name__ == "__main__":
    from sensorium.engine.lightning_cli import SensoriumCLI

    out = Path(sys.argv[1]).resolve()
    os.chdir(out / f"rank{os.environ['RANK']}")
    record = json.dumps({"class_path": "run_dir_ranks.RecordRunDir", "init_args": {"out": str(out)}})
    SensoriumCLI(args=["fit", *TOY, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1",
                       "--run.root", "runs", f"--trainer.callbacks+={record}"])
