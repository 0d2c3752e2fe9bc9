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


def gflops(dtype, n: int, seconds: float) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        reps = 0
        while reps < 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--seconds", type=float, default=3.0)
    ns = p.parse_args()
    report({"fp32_gflops": gflops(torch.float32, ns.size, ns.seconds),
            "bf16_gflops": gflops(torch.bfloat16, ns.size, ns.seconds),
            "threads": torch.get_num_threads(), "size": ns.size, "torch": torch.__version__})


if __name__ == "__main__":
    main()
