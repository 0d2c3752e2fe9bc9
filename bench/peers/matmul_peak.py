"""The machine's matmul peak with torch, fp32 and bf16, all threads: the denominator of model FLOPs utilisation.

    python bench/peers/matmul_peak.py [--size 2048] [--seconds 3]

Large square matmuls (2·n³ FLOPs each), repeated for a fixed time after a warm-up; the best of several timed
bursts is the peak (other load on the machine only ever makes a burst slower). Prints one BENCH_RESULT line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import report  # noqa: E402


def gflops(dtype, n: int, seconds: float, device: str = "cpu") -> float:
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    reps_per_burst = 3 if device == "cpu" else 50
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(reps_per_burst):
            torch.mm(a, b)
        sync()
        best = max(best, 2 * n**3 * reps_per_burst / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ns = p.parse_args()
    if ns.device == "cuda":  # fp32 matmuls as the card runs them by default (no TF32), and its bf16 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = False
    # Without native bf16 (an AVX2-only CPU) torch emulates bf16 matmuls at a small fraction of fp32's rate: a square
    # 2048 one takes minutes there. Nothing computes in bf16 on such a CPU (lmcore's "auto" is fp32), so its bf16
    # figure is only informative and is measured on a smaller square.
    from lmcore.training.precision import cpu_has_native_bf16

    native = ns.device == "cuda" or cpu_has_native_bf16()
    bf16_size = ns.size if native else min(ns.size, 512)
    report({"fp32_gflops": gflops(torch.float32, ns.size, ns.seconds, ns.device),
            "bf16_gflops": gflops(torch.bfloat16, bf16_size, ns.seconds, ns.device), "device": ns.device,
            "threads": torch.get_num_threads(), "size": ns.size, "bf16_size": bf16_size, "torch": torch.__version__})


if __name__ == "__main__":
    main()
