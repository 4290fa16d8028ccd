"""Attention forward + backward on CPU: fp32, bf16, and what `sensorium.layers.attention` does.

PyTorch's CPU flash-attention backward is slow in bf16 for narrow heads; `masked_sdpa` runs
those in fp32 (`attention_dtype`). This prints, per shape of the recipes' attention layers, the
milliseconds of one forward + backward with q, k, v in fp32, in bf16, and as sensorium runs
them under bf16 autocast (inputs in bf16, computed in the dtype `attention_dtype` picks).

    python benchmarks/cpu_attention.py [--threads N]

Numbers are measured here, now (close other work for clean numbers).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sensorium.layers.attention import attention_dtype, masked_sdpa

# (what, batch, heads, query tokens, key tokens, head_dim)
SHAPES = [
    ("cardiac demo encoder: 64 latents over 1024 points", 16, 8, 64, 1024, 16),
    ("cardiac demo decoder: 464 queries over 64 latents", 16, 8, 464, 64, 16),
    ("cardiac demo latent self-attention", 16, 8, 64, 64, 16),
    ("tactile demo encoder (visible patches)", 32, 4, 65, 65, 32),
    ("welding demo fusion", 48, 4, 17, 17, 24),
    ("ViT-S/16 block", 32, 6, 197, 197, 64),
    ("long self-attention, head_dim 64", 8, 8, 1024, 1024, 64),
    ("long self-attention, head_dim 32", 8, 8, 1024, 1024, 32),
]


def step_ms(batch: int, heads: int, nq: int, nk: int, d: int, mode: str, repeats: int = 5) -> float:
    """Median ms of forward + backward; mode: fp32, bf16 or sensorium."""
    dtype = torch.float32 if mode == "fp32" else torch.bfloat16
    q, k, v = (torch.randn(batch, heads, n, d, dtype=dtype, requires_grad=True) for n in (nq, nk, nk))

    def run() -> None:
        if mode == "sensorium":
            with torch.autocast("cpu", torch.bfloat16):
                out = masked_sdpa(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out.float().sum().backward()

    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per forward + backward")
    print(f"{'shape (B, heads, Nq, Nk, d)':<30} {'fp32':>8} {'bf16':>8} {'sensorium':>10}  runs in  what")
    for what, *shape in SHAPES:
        probe = torch.zeros(1, 1, 1, shape[-1], dtype=torch.bfloat16, requires_grad=True)
        chosen = str(attention_dtype(probe, probe, probe)).removeprefix("torch.")
        times = [step_ms(*shape, mode) for mode in ("fp32", "bf16", "sensorium")]
        print(f"{str(tuple(shape)):<30} {times[0]:>8.1f} {times[1]:>8.1f} {times[2]:>10.1f}  {chosen:<8} {what}")


if __name__ == "__main__":
    main()
