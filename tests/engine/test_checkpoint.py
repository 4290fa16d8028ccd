import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sensorium.engine.callbacks import AtomicCheckpointIO
from sensorium.engine.checkpoint import atomic_torch_save, export_model, load_checkpoint, load_export


class _Exploding:
    """Pickles a few MB and then fails: a write interrupted midway."""

    def __reduce__(self):
        raise OSError(28, "No space left on device")


def test_interrupted_write_keeps_previous_last_ckpt_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2, "big": torch.zeros(1_000_000), "boom": _Exploding()}, path)
    restored = load_checkpoint(path)
    assert restored["step"] == 1 and torch.equal(restored["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_killed_writer_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that keeps rewriting last.ckpt: whatever moment it dies, the file loads."""
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import torch, sys
        from sensorium.engine.checkpoint import atomic_torch_save
        step = 0
        while True:
            atomic_torch_save({{"step": step, "w": torch.full((2_000_000,), float(step))}}, {str(path)!r})
            if step == 0:
                print("ready", flush=True)
            step += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        import time

        time.sleep(0.5)  # several rewrites in flight
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    restored = load_checkpoint(path)
    assert restored["w"].shape == (2_000_000,)
    assert bool((restored["w"] == restored["step"]).all())


def test_export_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied: safetensors must deduplicate
    export_model(model, {"name": "tiny"}, tmp_path / "export")
    fresh = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    fresh[1].weight = fresh[0].weight
    load_export(fresh, tmp_path / "export")
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "export" / "config.json").read_text().strip().startswith("{")


def test_atomic_save_replaces_content(tmp_path):
    path = tmp_path / "x.ckpt"
    atomic_torch_save({"v": 1}, path)
    atomic_torch_save({"v": 2}, path)
    assert load_checkpoint(path)["v"] == 2
