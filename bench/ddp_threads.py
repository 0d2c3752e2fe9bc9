"""Two ranks × one thread (torchrun, gloo) against one process × two threads, same global batch.

    python bench/ddp_threads.py            # full: 10 and 30 steps, two rounds, interleaved A B A B
    python bench/ddp_threads.py --quick    # CI smoke: tiny model, 2 and 4 steps, one round

Per-step time is the difference of two runs with different step counts (start-up and data preparation cancel).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def run(work: Path, ranks: int, steps: int, global_batch: int, config: dict) -> float:
    args = {"vocab_size": 8000, "max_seq_length": 128, "train_batch_size": global_batch // ranks,
            "max_steps": steps, "save_steps": -1, "logging_steps": 1000, "overwrite_output_dir": True,
            "output_dir": str(work / f"out-{ranks}-{steps}"), "cache_dir": str(work / "cache"),
            "config": config, "mixed_precision": "no", "reprocess_input_data": False}
    spec = work / f"spec-{ranks}-{steps}.json"
    spec.write_text(json.dumps({"model_type": "bert", "train_files": ["sample"], "args": args}))
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                if ranks > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1" if ranks > 1 else "2"}
    start = time.perf_counter()
    subprocess.run([*launcher, "-m", "lmcore", "train", "--spec", str(spec)], check=True, env=env, cwd=work,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    ns = p.parse_args()
    short, long_, rounds, config, batch = (2, 4, 1, TINY, 8) if ns.quick else (10, 30, 2, MODEL, 32)
    tokens_per_step = batch * 128
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(work, 1, 1, batch, config)  # trains the tokenizer and the features once, outside the timings
        per_step: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for ranks in (1, 2):
                per_step[ranks].append((run(work, ranks, long_, batch, config) - run(work, ranks, short, batch,
                                                                                     config)) / (long_ - short))
    best = {r: min(v) for r, v in per_step.items()}
    for ranks, label in ((1, "1 process x 2 threads"), (2, "2 ranks x 1 thread (gloo)")):
        print(f"{label:28s} {best[ranks]:.3f} s/step  {tokens_per_step / best[ranks]:,.0f} tokens/s")
    print(f"ratio (2 ranks / 1 process tokens/s): {best[1] / best[2]:.2f}")


if __name__ == "__main__":
    main()
