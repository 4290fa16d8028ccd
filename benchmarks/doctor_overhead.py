"""What the doctor costs a training step of the welding demo model, measured in one run:

    python benchmarks/doctor_overhead.py [--steps N] [--rounds R] [--warmup W] [--batch B] [--threads T]

The welding demo task (model, precision and gradient clipping of configs/demo.yaml) trains on
random batches of the demo's shapes through a Lightning Trainer (CSV logs every 5 steps, as the
demo), once with the Doctor callback and once without, alternating for R rounds so that the load of
other processes hits both alike. Each fit runs W warm-up steps, then N timed steps; the doctor's
per-step host checks cover the warm-up (`host_check_steps` = W) and then run every
`host_check_every` steps, as in the steady state of a long run.

Prints the steps/s of each fit (from its median step time), the overhead in percent (median over
rounds) against the target (<= 2%), and the time spent inside the doctor's per-step hooks: a
direct measure, less exposed to the machine's noise than the difference of two rates (on CPU the
doctor's tensor work runs inside its hooks; Lightning's handling of the values it logs does not).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from sensorium.engine.doctor import Doctor, DoctorConfig
from sensorium.recipes.welding.reader import WeldingPreprocess
from sensorium.recipes.welding.task import WeldingTask

DEMO = Path(__file__).resolve().parents[1] / "src/sensorium/recipes/welding/configs/demo.yaml"
TARGET = 2.0  # percent


class RandomBatches(Dataset):
    """`count` ready-made batches of the welding datamodule's shapes (served with batch_size=None)."""

    def __init__(self, count: int, batch_size: int, distinct: int = 4):
        p = WeldingPreprocess()
        g = torch.Generator().manual_seed(0)
        self.count = count
        self.batches = [{
            "video": torch.rand(batch_size, p.num_frames, 3, p.frame_size, p.frame_size, generator=g),
            "images": torch.rand(batch_size, p.num_images, 3, p.image_size, p.image_size, generator=g),
            "audio": torch.randn(batch_size, 1, p.n_mels, p.audio_frames, generator=g),
            "sensor": torch.randn(batch_size, p.sensor_length, len(p.sensor_columns), generator=g),
            "present": torch.ones(batch_size, 4, dtype=torch.bool),
            "label": torch.arange(batch_size) % 12,  # 12 classes x batch/12 samples, as the demo's sampler
        } for _ in range(distinct)]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i % len(self.batches)]


class StepClock(L.Callback):
    """Time at the start of each training batch (listed first, so it runs before the doctor)."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


class TimedDoctor(Doctor):
    """The Doctor, with the seconds spent in its per-step hooks summed from step `start` on."""

    def __init__(self, config: DoctorConfig, start: int):
        super().__init__(config)
        self.start = start
        self.seconds = 0.0

    def _timed(self, hook, trainer, *args) -> None:
        begin = time.perf_counter()
        hook(trainer, *args)
        if trainer.global_step >= self.start:
            self.seconds += time.perf_counter() - begin

    def on_train_batch_start(self, trainer, *args) -> None:
        self._timed(super().on_train_batch_start, trainer, *args)

    def on_after_backward(self, trainer, *args) -> None:
        self._timed(super().on_after_backward, trainer, *args)

    def on_before_optimizer_step(self, trainer, *args) -> None:
        self._timed(super().on_before_optimizer_step, trainer, *args)

    def on_train_batch_end(self, trainer, *args) -> None:
        self._timed(super().on_train_batch_end, trainer, *args)


def steps_per_second(doctor: bool, warmup: int, steps: int, batch_size: int, logs: Path) -> tuple[float, float]:
    """One fit of warmup + steps (+1 so the last timed step ends at a batch start) optimiser steps:
    steps/s and the doctor's seconds per step in its hooks (0 without it)."""
    demo = yaml.safe_load(DEMO.read_text())
    torch.manual_seed(0)
    task = WeldingTask(**demo["model"]["init_args"])
    clock = StepClock()
    callbacks: list[L.Callback] = [clock]
    timed = TimedDoctor(DoctorConfig(host_check_steps=warmup), start=warmup)
    if doctor:
        callbacks.append(timed)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=demo["trainer"]["precision"],
                        gradient_clip_val=demo["trainer"]["gradient_clip_val"], log_every_n_steps=5,
                        max_epochs=1, callbacks=callbacks, logger=CSVLogger(logs), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    loader = DataLoader(RandomBatches(warmup + steps + 1, batch_size), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    # The median step, not the mean: another process taking the cores for a moment slows a few
    # steps a lot, and would decide the comparison.
    durations = [b - a for a, b in zip(clock.starts[warmup:], clock.starts[warmup + 1:])]
    return 1 / statistics.median(durations), timed.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per fit")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per fit")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of fits (doctor on, doctor off)")
    parser.add_argument("--batch", type=int, default=48, help="batch size (the demo: 12 classes x 4)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")  # Lightning's notes on the dataloader and logger, once per fit
    for name in ("lightning.pytorch", "lightning.fabric", "sensorium"):
        __import__("logging").getLogger(name).setLevel("WARNING")

    rates: dict[bool, list[float]] = {True: [], False: []}
    in_hooks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            # alternate which goes first, so a slow start of a round does not always fall on one side
            for doctor in ((True, False) if r % 2 == 0 else (False, True)):
                rate, seconds = steps_per_second(doctor, args.warmup, args.steps, args.batch, Path(tmp))
                rates[doctor].append(rate)
                if doctor:
                    in_hooks.append(seconds)
            print(f"round {r + 1}: doctor on {rates[True][-1]:.3f} steps/s, off {rates[False][-1]:.3f} steps/s",
                  flush=True)
    overheads = [100 * (off / on - 1) for on, off in zip(rates[True], rates[False])]  # extra time per step
    overhead = statistics.median(overheads)
    print(f"welding demo model, batch {args.batch}, {args.threads} thread(s), {args.steps} timed steps per fit, "
          f"torch {torch.__version__}")
    print(f"  doctor on : {statistics.median(rates[True]):.3f} steps/s (median of {args.rounds})")
    print(f"  doctor off: {statistics.median(rates[False]):.3f} steps/s (median of {args.rounds})")
    print(f"  overhead  : {overhead:+.2f}% (median over rounds; per round "
          + ", ".join(f"{o:+.1f}%" for o in overheads) + f"); target <= {TARGET:g}%: "
          + ("met" if overhead <= TARGET else "NOT met"))
    hooks = statistics.median(in_hooks)
    print(f"  in the doctor's hooks: {1000 * hooks:.2f} ms/step = {100 * hooks * statistics.median(rates[True]):.2f}% "
          "of a step (median over rounds)")


if __name__ == "__main__":
    main()
