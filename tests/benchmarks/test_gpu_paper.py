"""benchmarks/gpu_paper.py: its CPU mode end to end (every paper config, tiny sizes, 2 timed steps),
and the pieces its numbers rest on (the FLOP count, the device peaks)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_paper.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_paper = _load()


def test_model_flops_counts_a_linear_layer_forward_and_backward():
    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    with gpu_paper.ModelFlops() as counter:
        layer(x).sum().backward()
    # forward 2*B*I*O; backward: the input's and the weight's gradients, 2*B*I*O each
    assert counter.total == 3 * 2 * 4 * 16 * 8


def test_model_flops_counts_cpu_attention_and_survives_autograd_grad():
    q, k, v = (torch.randn(2, 3, 10, 8, requires_grad=True) for _ in range(3))
    with gpu_paper.ModelFlops() as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.total == 2 * (2 * 2 * 3 * 10 * 10 * 8)  # two matmuls of (10 x 8) by (8 x 10) per head
    # A gradient of a gradient inside the counted step (cardiac's eikonal term) works and is counted.
    points = torch.randn(5, 3, requires_grad=True)
    layer = torch.nn.Linear(3, 1)
    with gpu_paper.ModelFlops() as counter:
        (grad,) = torch.autograd.grad(layer(points).sum(), points, create_graph=True)
        grad.pow(2).sum().backward()
    assert counter.total > 2 * 5 * 3


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 4090", None),
])
def test_peak_tflops_by_device_name(name, peak):
    assert gpu_paper.peak_tflops(name) == peak


@pytest.mark.slow
def test_cpu_mode_runs_every_paper_config(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "2", "--warmup", "1", "--tiny",
                           "--peak-tflops", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads((out / "gpu_paper.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == list(gpu_paper.ROWS), f"rows: {list(rows)}"
    for name, r in rows.items():
        assert "error" not in r, f"{name}: {r.get('error')}"
        assert math.isfinite(r["step_s"]) and r["step_s"] > 0, f"{name}: step time {r['step_s']}"
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0, f"{name}: {r['samples_per_s']} samples/s"
        assert math.isclose(r["samples_per_s"], r["batch"] * r["accumulate"] / r["step_s"]), name
        assert 0.0 <= r["data_wait_share"] <= 1.0, f"{name}: data wait {r['data_wait_share']}"
        assert r["flops_per_step"] > 0, f"{name}: {r['flops_per_step']} FLOPs"
        assert r["peak_memory_bytes"] > 0, name
        assert r["timed_batches"] == 2 * r["accumulate"], f"{name}: {r['timed_batches']} batches timed"
        # --peak-tflops 1: MFU is the achieved TFLOP/s itself
        assert math.isclose(r["mfu"], r["flops_per_step"] / r["step_s"] / 1e12), name
    assert rows["tactile/paper"]["accumulate"] == 2  # the paper's accumulation, kept
    assert rows["tactile/paper"]["precision"] == "bf16-mixed"  # its 16-mixed, on a CPU
    assert any("random weights" in s for s in rows["welding/paper"]["stand_ins"])
    assert "device: " in done.stdout and "doppler/dit_paper" in done.stdout
