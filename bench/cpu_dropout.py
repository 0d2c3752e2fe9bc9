"""lmcore's CPU dropout masks against torch's `bernoulli_`, side by side: s/step of the bench's three objectives.

    python bench/cpu_dropout.py --write-results     # a RESULTS.md section (marked `cpu_dropout`)

Each configuration trains through `LanguageModelingModel.train_model` at the bench's shapes, every run a fresh
process (bench/run.py's workers and method: features and tokenizer built once, runs interleaved, s/step = the
difference of the best SHORT- and LONG-step runs' train_model times over the step difference), alternately with
the engine's dropout (`lmcore.training.hardware.cpu_dropout`) and with that context replaced by a no-op in the
worker (torch's own `bernoulli_` kernel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.run import Bench, machine, parse  # noqa: E402

CONFIGS = (("BERT-MLM", None), ("GPT-2-CLM", None), ("ELECTRA", None), ("GPT-2-CLM", "no"))


def measure(b: Bench, steps: tuple[int, int], rounds: int) -> list[dict]:
    setups = {s.name: s for s in b.setups}
    best: dict[tuple, float] = {}
    for _ in range(rounds):
        for name, precision in CONFIGS:
            for n in steps:
                for variant in ("lmcore", "torch"):
                    m = b.lmcore("train", setups[name], steps=n, mixed_precision=precision,
                                 torch_dropout=variant == "torch", out=b.work / f"out-{name}")
                    key = (name, precision, variant, n)
                    best[key] = min(best.get(key, float("inf")), m.result["train_s"])
    short, long_ = steps
    rows = []
    for name, precision in CONFIGS:
        row = {v: (best[(name, precision, v, long_)] - best[(name, precision, v, short)]) / (long_ - short)
               for v in ("lmcore", "torch")}
        row.update(config=name, precision=precision or "auto", speedup=row["torch"] / row["lmcore"])
        print(f"{name} {row['precision']}: torch's dropout {row['torch']:.3f} s/step, lmcore's {row['lmcore']:.3f}"
              f" s/step, {row['speedup']:.2f}x", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def section(r: dict) -> str:
    m = r["machine"]
    short, long_ = r["steps"]
    lines = ["<!-- cpu_dropout: begin -->", "## Dropout masks on the CPU (bench/cpu_dropout.py)", "",
             f"`{r['command']}`, {r['date']}, lmcore {m['lmcore_commit']}; {m['cpu']}, {m['cores']} cores, CPU flags "
             f"{', '.join(m['cpu_flags'])}. The same engine with its dropout masks (16-bit slices of 64-bit draws, "
             "applied as 0/1 products: `hardware.cpu_dropout`) and with torch's `bernoulli_` masks, every run a "
             "fresh process; s/step = "
             f"(best {long_}-step run - best {short}-step run) / {long_ - short}, {r['rounds']} interleaved rounds. "
             "auto: bf16 on this CPU.", "",
             "| config | precision | torch's dropout s/step | lmcore's s/step | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {row['config']} | {row['precision']} | {row['torch']:.3f} | {row['lmcore']:.3f} | "
              f"{row['speedup']:.2f}x |" for row in r["rows"]]
    if r.get("note"):
        lines += ["", r["note"]]
    lines += ["", "<!-- cpu_dropout: end -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="2,14")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--render", action="store_true", help="re-render the section from bench/cpu_dropout.json")
    p.add_argument("--note", default=None, help="a paragraph under the table")
    ns = p.parse_args(argv)
    if ns.render:
        r = json.loads((common.BENCH / "cpu_dropout.json").read_text())
        r["note"] = ns.note or r.get("note")
        (common.BENCH / "cpu_dropout.json").write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
        return 0
    steps = tuple(int(s) for s in ns.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="lmcore-dropout-") as tmp:
        b = Bench(parse(["--no-install"]), Path(tmp))
        rows = measure(b, steps, ns.rounds)
    r = {"machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows, "steps": steps,
         "rounds": ns.rounds, "command": "python bench/cpu_dropout.py " + " ".join(sys.argv[1:] if argv is None
                                                                                  else argv)}
    if ns.write_results:
        (common.BENCH / "cpu_dropout.json").write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
