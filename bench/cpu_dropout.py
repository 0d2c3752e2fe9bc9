"""lmcore's CPU dropout masks against torch's `bernoulli_`, side by side: s/step of the bench's three objectives.

    python bench/cpu_dropout.py --write-results     # a RESULTS.md section (marked `cpu_dropout`)

One process; each configuration trains through `LanguageModelingModel.train_model` at the bench's shapes (features
cached by a first run), alternately with the engine's dropout (`lmcore.training.hardware.cpu_dropout`) and with
that context replaced by a no-op (torch's own dropout kernel), `--rounds` interleaved rounds of a SHORT- and a
LONG-step run each; s/step is the difference of the best runs' train_model times over the step difference.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.run import machine  # noqa: E402

CONFIGS = (("BERT-MLM", "auto"), ("GPT-2-CLM", "auto"), ("ELECTRA", "auto"), ("GPT-2-CLM", "no"))


def per_step(name: str, precision: str, steps: tuple[int, int], rounds: int, work: Path) -> dict:
    from bench.peers import lmcore_run
    from lmcore.training import hardware

    setup = next(s for s in common.setups(False) if s.name == name).to_json()
    corpus = str(common.__getattr__("SAMPLE"))
    engine = hardware.cpu_dropout
    best: dict[str, dict[int, float]] = {"lmcore": {}, "torch": {}}
    for _ in range(rounds):
        for n in steps:
            for variant in ("lmcore", "torch"):
                hardware.cpu_dropout = engine if variant == "lmcore" else (lambda device: contextlib.nullcontext())
                ns = argparse.Namespace(setup=setup, cache=str(work / "cache"), out=str(work / f"out-{name}"),
                                        steps=n, lr=1e-3, mixed_precision=precision, tokenizer=None, compile=False,
                                        seed=None, block=None, batch=None)
                lm = lmcore_run.build(setup, ns, train_files=[corpus])
                start = time.perf_counter()
                lm.train_model(corpus, output_dir=ns.out)
                seconds = time.perf_counter() - start
                best[variant][n] = min(best[variant].get(n, float("inf")), seconds)
    hardware.cpu_dropout = engine
    short, long_ = steps
    row = {v: (b[long_] - b[short]) / (long_ - short) for v, b in best.items()}
    row.update(config=name, precision=precision, speedup=row["torch"] / row["lmcore"])
    print(f"{name} {precision}: torch dropout {row['torch']:.3f} s/step, lmcore's {row['lmcore']:.3f} s/step, "
          f"{row['speedup']:.2f}x", file=sys.stderr, flush=True)
    return row


def section(r: dict) -> str:
    m = r["machine"]
    lines = ["<!-- cpu_dropout: begin -->", "## Dropout masks on the CPU (bench/cpu_dropout.py)", "",
             f"`{r['command']}`, {r['date']}, lmcore {m['lmcore_commit']}; {m['cpu']}, {m['cores']} cores, CPU flags "
             f"{', '.join(m['cpu_flags'])}. The same engine with its dropout masks (15-bit slices of 32-bit draws, "
             "`hardware.cpu_dropout`) and with torch's `bernoulli_` masks; s/step = (best "
             f"{r['steps'][1]}-step run - best {r['steps'][0]}-step run) / {r['steps'][1] - r['steps'][0]}, "
             f"{r['rounds']} interleaved rounds, one process.", "",
             "| config | precision | torch's dropout s/step | lmcore's s/step | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {row['config']} | {row['precision']} | {row['torch']:.3f} | {row['lmcore']:.3f} | "
              f"{row['speedup']:.2f}x |" for row in r["rows"]]
    lines += ["", "<!-- cpu_dropout: end -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="2,14")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--write-results", action="store_true")
    ns = p.parse_args(argv)
    steps = tuple(int(s) for s in ns.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="lmcore-dropout-") as tmp:
        rows = [per_step(name, precision, steps, ns.rounds, Path(tmp)) for name, precision in CONFIGS]
    r = {"machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows, "steps": steps,
         "rounds": ns.rounds, "command": "python bench/cpu_dropout.py " + " ".join(sys.argv[1:] if argv is None
                                                                                  else argv)}
    if ns.write_results:
        (common.BENCH / "cpu_dropout.json").write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
