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


def test_load_task_rebuilds_a_task_and_names_the_file_when_it_cannot(tmp_path):
    from toy_recipe import ToyTask

    from sensorium.engine.checkpoint import load_task
    from sensorium.errors import ConfigError, DataError

    task = ToyTask(hidden=12)
    path = tmp_path / "toy.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict(),
                "sensorium": {"recipe": "toy", "task": "ToyTask"}}, path)
    loaded = load_task(path, ToyTask)
    assert not loaded.training and all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                                          task.state_dict().values()))
    with pytest.raises(ConfigError, match="no such ToyTask checkpoint"):
        load_task(tmp_path / "none.ckpt", ToyTask)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.ckpt: cannot read as a checkpoint"):
        load_task(tmp_path / "junk.ckpt", ToyTask)
    other = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict(),
                "sensorium": {"recipe": "cardiac", "task": "CardiacTask"}}, other)
    with pytest.raises(ConfigError, match="other.ckpt: is a CardiacTask checkpoint, not a ToyTask one"):
        load_task(other, ToyTask)
    state = dict(task.state_dict())
    state["net.0.weight"] = torch.zeros(3, 3)
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match="bad.ckpt: weights do not fit the ToyTask"):
        load_task(tmp_path / "bad.ckpt", ToyTask)


def test_load_export_names_the_file_and_the_keys_that_do_not_fit(tmp_path):
    from sensorium.errors import ConfigError

    source = nn.Linear(4, 3)
    export_model(source, {"task": "X"}, tmp_path / "export")
    assert torch.equal(load_export(nn.Linear(4, 3), tmp_path / "export").weight, source.weight)
    with pytest.raises(ConfigError, match="model.safetensors: weights do not fit Sequential: missing"):
        load_export(nn.Sequential(nn.Linear(4, 3)), tmp_path / "export")
    with pytest.raises(ConfigError, match="no such export"):
        load_export(nn.Linear(4, 3), tmp_path / "nowhere")
