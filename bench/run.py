"""Speed and memory of lmcore against its peers: transformers' Trainer and Simple Transformers 0.70.8.

    python bench/run.py                        # every section (see bench/README.md for the time it takes)
    python bench/run.py --only train,data      # some sections: peak, train, data, eval, padding, quality
    python bench/run.py --write-results        # ... and regenerate bench/RESULTS.md + bench/results.json
    python bench/run.py --quick                # CI smoke: tiny models, small corpora, never installs anything

Every measured run is its own fresh process (wall time, peak RSS from wait4). Training runs are interleaved
(A B C A B C ... for each step count, each round), and the time per step is the difference of two step counts:
(best long run - best short run) / (long - short), which cancels start-up, model building, data preparation and
the final save. Two clocks: the system's own train call (train_model / trainer.train, timed inside the worker:
the figure used) and the whole process's wall time (shown beside it; process start-up on shared cores adds
seconds of noise to it). Figures go to stdout and to a JSON file; bench/report.py renders RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, report  # noqa: E402
from bench.common import log  # noqa: E402
from bench.common import BATCH, BLOCK, PEERS, SAMPLE, Setup, run_worker  # noqa: E402
from bench.flops import flops_per_token, hf_executed_flops_per_token  # noqa: E402
from bench.record import (QUICK_CPU_NOT_RECORDED, best_peak, render_recorded, seconds_per_step,  # noqa: E402
                          write_where_it_belongs)

SECTIONS = ("peak", "train", "data", "eval", "padding", "quality")
SYSTEMS = ("lmcore", "trainer", "simpletransformers")


class Bench:
    """One bench run: its options, its scratch folder, the tokenizers it trained, and the figures so far."""

    def __init__(self, ns, work: Path):
        self.ns, self.work = ns, work
        gpu = ns.device == "cuda"
        self.setups = common.setups(ns.quick and not gpu, base=gpu)
        # --quick only checks that every part runs, on BERT alone (3 minutes on 2 busy cores); on a GPU it measures
        # the three objectives at BERT-base shapes.
        self.train_setups = self.setups[:1] if ns.quick and not gpu else self.setups
        if ns.setups:
            self.train_setups = [s for s in self.setups if s.name in ns.setups]
        self.results: dict = {"sections": {}, "notes": []}
        self.tokenizers: dict[str, str] = {}
        self.corpus = str(work / "train.txt")
        common.repeat_corpus(Path(self.corpus), ns.train_kb * 1024) if ns.train_kb else shutil.copy(SAMPLE,
                                                                                                  self.corpus)

    # ---- workers ----------------------------------------------------------------------------------------------
    def lmcore(self, job: str, setup: Setup | None = None, **kw) -> common.Measured:
        if self.ns.device == "cuda" and job in ("train", "flops", "eval"):
            kw.setdefault("device", "cuda")
        return self._worker([sys.executable, str(PEERS / "lmcore_run.py"), job], setup, kw)

    def trainer(self, setup: Setup, **kw) -> common.Measured:
        env = {"PYTHONPATH": f"{common.ROOT}:{common.TRAINER_DEPS}"}
        return self._worker([sys.executable, str(PEERS / "trainer_run.py")], setup, kw, env)

    def simpletransformers(self, job: str, setup: Setup, **kw) -> common.Measured:
        return self._worker([str(common.ST_PYTHON), str(PEERS / "simpletransformers_run.py"), job], setup, kw)

    def _worker(self, cmd: list[str], setup: Setup | None, kw: dict, env: dict | None = None) -> common.Measured:
        if setup is not None:
            cmd += ["--setup", json.dumps(setup.to_json())]
            if "tokenizer" not in kw:
                kw["tokenizer"] = self.tokenizer(setup)
        kw.setdefault("corpus", self.corpus)
        kw.setdefault("cache", str(self.work / "cache"))
        for key, value in kw.items():
            if value is True:
                cmd.append(f"--{key.replace('_', '-')}")
            elif value is not None and value is not False:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        # Inductor's on-disk cache in this run's scratch folder: the first compiled run of each model is cold
        # whatever earlier runs left in the user's cache, and the timed runs after it find their kernels.
        env = {"TORCHINDUCTOR_CACHE_DIR": str(self.work / "inductor"), **(env or {})}
        m = run_worker(cmd, env=env, timeout=self.ns.timeout)
        if m.returncode != 0 or not m.result:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {m.returncode}):\n{m.log}")
        return m

    def tokenizer(self, setup: Setup) -> str:
        """lmcore trains each model type's tokenizer once; every system loads that same vocabulary."""
        kind = "bert" if setup.model_type == "electra" else setup.model_type  # both WordPiece, same settings
        if kind not in self.tokenizers:
            folder = self.work / f"tokenizer-{kind}"
            self.tokenizers[kind] = str(folder)
            m = self.lmcore("tokenizer", setup, out=folder, tokenizer=None)
            log(f"tokenizer {kind}: {m.result['vocab']} tokens in {m.result['seconds']:.1f}s")
        return self.tokenizers[kind]

    def systems(self) -> list[str]:
        """Every system the train section runs, each at its best settings beside its default: lmcore's default,
        its fp32 path and its compiled path; the Trainer in fp32, with its own bf16=True where the CPU runs bf16
        natively, and with torch_compile=True (in bf16 there); Simple Transformers as it runs."""
        have = ["lmcore", "lmcore-fp32", "lmcore-compile"]
        if self.ns.device == "cuda":  # the GPU quick bench: lmcore's default (bf16), compiled on request
            return [s for s in self.ns.systems or ["lmcore"] if s.startswith("lmcore")]
        wanted = self.ns.systems or ["trainer", "simpletransformers"]
        if not any(s.startswith("trainer") for s in wanted):
            pass
        elif self.ns.skip_trainer or not common.trainer_available():
            self.note("transformers Trainer skipped: accelerate not installed in bench/.deps-trainer")
        else:
            have += ["trainer", "trainer-bf16", "trainer-compile"] if native_bf16() else ["trainer",
                                                                                          "trainer-compile"]
        if "simpletransformers" not in wanted:
            pass
        elif self.ns.skip_st or not common.st_available():
            self.note("Simple Transformers skipped: bench/.venv-st is not installed")
        else:
            have.append("simpletransformers")
        if self.ns.systems:
            have = [s for s in have if s in self.ns.systems]
        return have

    def note(self, text: str) -> None:
        if text not in self.results["notes"]:
            self.results["notes"].append(text)
            log(text)


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------

def section_peak(b: Bench) -> dict:
    m = run_worker([sys.executable, str(PEERS / "matmul_peak.py"), "--size", str(b.ns.peak_size),
                    "--seconds", str(b.ns.peak_seconds), "--device", b.ns.device], timeout=b.ns.timeout)
    log(f"matmul peak: fp32 {m.result['fp32_gflops']:.0f} GFLOP/s, bf16 {m.result['bf16_gflops']:.0f} GFLOP/s")
    return m.result


def native_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx512_bf16" in flags or " amx_bf16" in flags


def runs_train(b: Bench, system: str, setup: Setup, steps: int) -> common.Measured:
    out = b.work / f"out-{system}-{setup.model_type}"
    if system == "lmcore":
        return b.lmcore("train", setup, steps=steps, out=out)
    if system == "lmcore-fp32":  # the same engine in full fp32: a ratio to the Trainer any CPU can measure
        return b.lmcore("train", setup, steps=steps, out=out, mixed_precision="no")
    if system == "lmcore-compile":  # the default precision, compiled (compile=True, whatever "auto" would say)
        return b.lmcore("train", setup, steps=steps, out=out, compile=True)
    if system.startswith("trainer"):
        best = native_bf16() and system in ("trainer-bf16", "trainer-compile")
        return b.trainer(setup, steps=steps, out=out, cache=b.work / "hf-datasets", bf16=best,
                         compile=system == "trainer-compile")
    return b.simpletransformers("train", setup, steps=steps, out=out, cache=b.work / f"st-{setup.model_type}")


def warm_up(b: Bench, pairs) -> dict:
    """Build every system's cached features once, outside the timings (each then reuses its own cache), and run
    each compiled system once so that inductor's on-disk cache holds its kernels: the timed runs then pay the
    warm-up of a second run of the same shapes (the same in the short and the long run, so it cancels). Returns
    the first (cold) compiled runs' figures: lmcore's measured warm-up, and each system's whole train call."""
    cold: dict = {}
    for system, setup in pairs:
        if system == "lmcore-fp32":
            continue  # the same features as lmcore's
        if system == "lmcore":
            b.lmcore("prepare", setup, tokenizer=b.tokenizer(setup))
        elif system == "trainer":
            b.trainer(setup, steps=0, out=b.work / "out-trainer-prep", cache=b.work / "hf-datasets")
        elif system == "simpletransformers":
            b.simpletransformers("prepare", setup, out=b.work / f"out-st-{setup.model_type}",
                                 cache=b.work / f"st-{setup.model_type}")
        elif system.endswith("compile"):
            m = runs_train(b, system, setup, b.ns.steps[0])
            cold[f"{system}/{setup.name}"] = {"train_call_s": m.result["train_s"],
                                               "compile_warmup_s": m.result.get("compile_warmup_s")}
            log(f"cold compile {setup.name} {system}: train call {m.result['train_s']:.1f}s"
                + (f", warm-up {m.result['compile_warmup_s']:.1f}s" if m.result.get("compile_warmup_s") else ""))
    return cold


def section_train(b: Bench) -> dict:
    systems = b.systems()
    # The Trainer has no ELECTRA objective (transformers ships no ELECTRA pre-training collator or loss).
    # None of the Trainer's rows either: given an ELECTRA config it would train a masked LM, not the objective.
    pairs = [(s, st) for st in b.train_setups for s in systems
             if not (s.startswith("trainer") and st.model_type == "electra")]
    # --quick on the CPU: tiny models, the figures mean nothing anyway; on a GPU they are the measurement.
    cold = {} if b.ns.quick and b.ns.device == "cpu" else warm_up(b, pairs)
    short, long_ = b.ns.steps
    walls: dict[tuple, dict[int, list]] = {(s, st.name): {short: [], long_: []} for s, st in pairs}
    inner: dict[tuple, dict[int, list]] = {(s, st.name): {short: [], long_: []} for s, st in pairs}
    rss: dict[tuple, float] = {}
    warmups: dict[tuple, float] = {}
    for r in range(b.ns.rounds):
        for steps in (short, long_):
            for system, setup in pairs:
                m = runs_train(b, system, setup, steps)
                walls[(system, setup.name)][steps].append(m.wall_s)
                inner[(system, setup.name)][steps].append(m.result["train_s"])
                rss[(system, setup.name)] = max(rss.get((system, setup.name), 0.0), m.peak_rss_mb)
                if m.result.get("compile_warmup_s") is not None:  # a warm-cache warm-up: the smallest seen
                    warmups[(system, setup.name)] = min(warmups.get((system, setup.name), 1e9),
                                                        m.result["compile_warmup_s"])
                log(f"round {r + 1} {setup.name:9s} {system:18s} {steps:3d} steps: {m.wall_s:6.1f}s wall, "
                    f"{m.result['train_s']:6.1f}s in train call, {m.peak_rss_mb:,.0f} MB")
        if "peak" in b.results["sections"]:  # other work on the cores only lowers a peak: keep the best seen
            best_peak(b.results["sections"]["peak"], section_peak(b))
    rows = []
    executed = {}
    for (system, name), w in walls.items():
        per_step = seconds_per_step(inner[(system, name)], short, long_)
        setup = next(s for s in b.setups if s.name == name)
        if (system.startswith("lmcore"), name) not in executed:
            executed[(system.startswith("lmcore"), name)] = (
                b.lmcore("flops", setup).result["flops_per_position"] if system.startswith("lmcore")
                else hf_executed_flops_per_token(setup))
        rows.append({"system": system, "setup": name, "per_step_s": per_step,
                     "per_step_wall_s": seconds_per_step(w, short, long_),
                     "tokens_per_s": BATCH * BLOCK / per_step if per_step > 0 else None,
                     "flops_per_token": flops_per_token(setup),
                     "executed_flops_per_token": executed[(system.startswith("lmcore"), name)],
                     "peak_rss_mb": rss[(system, name)], "cold": cold.get(f"{system}/{name}"),
                     "compile_warmup_s": warmups.get((system, name)),
                     "walls": {str(k): v for k, v in w.items()},
                     "train_call_s": {str(k): v for k, v in inner[(system, name)].items()}})
    return {"steps": [short, long_], "rounds": b.ns.rounds, "tokens_per_step": BATCH * BLOCK, "rows": rows,
            "setups": [s.to_json() for s in b.setups], "native_bf16": native_bf16()}


def section_data(b: Bench) -> dict:
    """Tokenization throughput (first run and cache hit), the peers' feature building, and peak RSS of preparing
    a large corpus."""
    bert = b.setups[0]
    corpus = common.repeat_corpus(b.work / "data.txt", b.ns.data_mb * 2**20)
    out: dict = {"corpus_mb": corpus.stat().st_size / 2**20}
    cache = b.work / "data-cache"
    first = b.lmcore("prepare", bert, corpus=corpus, cache=cache, reprocess=True)
    hit = b.lmcore("prepare", bert, corpus=corpus, cache=cache)
    out["lmcore"] = {"first_s": first.result["prepare_s"], "cached_s": hit.result["prepare_s"],
                     "mb_per_s": first.result["bytes"] / 2**20 / first.result["prepare_s"],
                     "tokens": first.result["tokens"], "peak_rss_mb": first.peak_rss_mb}
    log(f"lmcore features: {out['lmcore']['mb_per_s']:.2f} MB/s, cache hit {hit.result['prepare_s']:.2f}s")
    systems = [] if b.ns.quick else b.systems()
    if "trainer" in systems:
        m = b.trainer(bert, steps=0, corpus=corpus, out=b.work / "out-trainer-data", cache=b.work / "data-hf")
        out["trainer"] = {"first_s": m.result["prepare_s"], "peak_rss_mb": m.peak_rss_mb,
                          "mb_per_s": m.result["bytes"] / 2**20 / m.result["prepare_s"]}
    if "simpletransformers" in systems:
        small = common.repeat_corpus(b.work / "data-st.txt", min(b.ns.data_mb, b.ns.st_data_mb) * 2**20)
        m = b.simpletransformers("prepare", bert, corpus=small, out=b.work / "out-st-data",
                                 cache=b.work / "data-st-cache")
        out["simpletransformers"] = {"first_s": m.result["prepare_s"], "corpus_mb": m.result["bytes"] / 2**20,
                                     "mb_per_s": m.result["bytes"] / 2**20 / m.result["prepare_s"],
                                     "peak_rss_mb": m.peak_rss_mb}
        log(f"Simple Transformers features: {out['simpletransformers']['mb_per_s']:.2f} MB/s")
    out["big"] = big_corpus(b, bert)
    return out


def big_corpus(b: Bench, bert: Setup) -> dict:
    """Peak RSS of lmcore's data preparation on a large corpus (1 GB by default), made by repeating the sample
    corpus in the scratch folder and deleted afterwards."""
    folder = b.work / "big"
    corpus = common.repeat_corpus(folder / "big.txt", b.ns.big_mb * 2**20)
    try:
        first = b.lmcore("prepare", bert, corpus=corpus, cache=folder / "cache", reprocess=True)
        hit = b.lmcore("prepare", bert, corpus=corpus, cache=folder / "cache")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log(f"{b.ns.big_mb} MB corpus: {first.result['prepare_s']:.0f}s, peak RSS {first.peak_rss_mb:,.0f} MB")
    return {"corpus_mb": first.result["bytes"] / 2**20, "first_s": first.result["prepare_s"],
            "cached_s": hit.result["prepare_s"], "peak_rss_mb": first.peak_rss_mb,
            "cached_peak_rss_mb": hit.peak_rss_mb, "tokens": first.result["tokens"]}


def section_eval(b: Bench) -> dict:
    corpus = common.repeat_corpus(b.work / "eval.txt", b.ns.eval_kb * 1024)
    rows = []
    for setup in b.train_setups:
        m = b.lmcore("eval", setup, corpus=corpus, out=b.work / f"out-eval-{setup.model_type}")
        rows.append({"setup": setup.name, "tokens_per_s": m.result["tokens_per_s"], "tokens": m.result["tokens"],
                     "eval_s": m.result["eval_s"], "peak_rss_mb": m.peak_rss_mb})
        log(f"eval {setup.name}: {m.result['tokens_per_s']:,.0f} tokens/s")
    return {"rows": rows, "eval_batch_size": BATCH}


def section_padding(b: Bench) -> dict:
    m = b.lmcore("padding", b.setups[0], cache=b.work / "padding-cache")
    log(f"line_by_line padding: lmcore {m.result['lmcore_padding']:.1%}, plain {m.result['dynamic_padding']:.1%}")
    return m.result


def section_quality(b: Bench) -> dict:
    """Held-out perplexity after the same short run, lmcore's default precision against the fp32 path, over
    several seeds each (the seed sets initialisation, data order, masks and dropout)."""
    train, held = common.held_out_split(b.work)
    rows = []
    wanted = b.ns.quality_configs.split(",") if b.ns.quality_configs else [s.name for s in b.train_setups]
    seeds = [42 + i for i in range(b.ns.quality_seeds)]
    for setup in (s for s in b.train_setups if s.name in wanted):
        row = {"setup": setup.name, "steps": b.ns.quality_steps, "seeds": seeds}
        for label, precision in (("default", None), ("fp32", "no")):
            row[label + "_runs"] = []
            for seed in seeds:
                m = b.lmcore("train", setup, corpus=train, eval_file=held, steps=b.ns.quality_steps, seed=seed,
                             mixed_precision=precision, out=b.work / f"out-quality-{setup.model_type}-{label}")
                row[label + "_runs"].append(m.result["perplexity"])
                log(f"quality {setup.name} {label} seed {seed}: {m.result['perplexity']:.2f}")
        row.update(quality_figures(row["default_runs"], row["fp32_runs"]))
        log(f"quality {setup.name}: default {row['default']:.2f} ± {row['default_std']:.2f}, fp32 "
            f"{row['fp32']:.2f} ± {row['fp32_std']:.2f} ({row['diff_pct']:+.2f}%), accepted: {row['accepted']}")
        rows.append(row)
    return {"rows": rows}


def quality_figures(default: list[float], fp32: list[float]) -> dict:
    """Means, sample standard deviations, the pooled one, and the rule: bf16 (the default) is accepted when its
    mean perplexity is at most 2% above fp32's, or above it by no more than one pooled standard deviation."""
    import statistics

    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    d, f = statistics.fmean(default), statistics.fmean(fp32)
    pooled = ((sd(default) ** 2 + sd(fp32) ** 2) / 2) ** 0.5
    diff = 100 * (d - f) / f
    return {"default": d, "fp32": f, "default_std": sd(default), "fp32_std": sd(fp32), "pooled_std": pooled,
            "diff_pct": diff, "accepted": diff <= 2.0 or d - f <= pooled}


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------

def machine() -> dict:
    import torch

    # The first processor's block of /proc/cpuinfo: every core of these machines is the same.
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines())}
    model, flags = info.get("model name") or platform.processor(), info.get("flags", "").split()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    family = f"{info.get('vendor_id', '?')} family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    return {"cpu": model, "cpu_family": family, "cores": os.cpu_count(), "memory_gb": round(mem / 2**20, 1),
            "gpu": gpu,
            "avx512_bf16": "avx512_bf16" in flags, "cpu_flags": [f for f in wanted if f in flags],
            "torch": torch.__version__, "python": platform.python_version(),
            "transformers": __import__("transformers").__version__, "lmcore_commit": engine_commit()}


def engine_commit() -> str:
    """The last commit that changed what lmcore's rows run: lmcore/ and the bench's lmcore worker (a commit to the
    rest of the bench measures the same engine); "+dirty" when those paths have uncommitted changes, "unknown"
    outside a git checkout unless $LMCORE_COMMIT names the commit a copy was made from (a tree sent to a GPU
    machine travels without its .git; unknown rows are never pooled)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=common.ROOT, capture_output=True, text=True).stdout.strip()

    paths = ("lmcore", "bench/peers/lmcore_run.py", "bench/common.py")
    commit = git("log", "-1", "--format=%h", "--", *paths)
    if not commit:
        return os.environ.get("LMCORE_COMMIT", "unknown")
    return commit + ("+dirty" if git("status", "--porcelain", "--", *paths) else "")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models and corpora, no installs "
                   "(with --device cuda: the three objectives at BERT-base shapes, lmcore only, a few minutes)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models train")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds of training runs (best taken)")
    p.add_argument("--steps", default=None, help="SHORT,LONG training steps whose difference gives s/step")
    p.add_argument("--quality-steps", type=int, default=None)
    p.add_argument("--quality-configs", default=None, help="e.g. BERT-MLM,ELECTRA (default: all)")
    p.add_argument("--quality-seeds", type=int, default=None, help="seeds per precision and configuration")
    p.add_argument("--systems", default=None, help="comma-separated subset of the train section's systems")
    p.add_argument("--setups", default=None, help="comma-separated subset of the train section's models "
                   "(BERT-MLM, GPT-2-CLM, ELECTRA)")
    p.add_argument("--data-mb", type=int, default=None, help="corpus for tokenization throughput")
    p.add_argument("--st-data-mb", type=int, default=2, help="Simple Transformers' (slow) share of it")
    p.add_argument("--big-mb", type=int, default=None, help="corpus for peak RSS of data preparation")
    p.add_argument("--eval-kb", type=int, default=None)
    p.add_argument("--skip-st", action="store_true", help="leave Simple Transformers out")
    p.add_argument("--skip-trainer", action="store_true", help="leave the transformers Trainer out")
    p.add_argument("--no-install", action="store_true", help="never install the peers' environments")
    p.add_argument("--write-results", action="store_true", help="write bench/RESULTS.md and bench/results.json")
    p.add_argument("--render", action="store_true", help="only re-render RESULTS.md from bench/results.json")
    p.add_argument("--merge-json", nargs="+", default=None,
                   help="fold the figures of earlier --json runs into bench/results.json and RESULTS.md")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one worker may run")
    ns = p.parse_args(argv)
    quick = ns.quick
    defaults = {"rounds": 1 if quick else 2, "steps": "1,3" if quick else "2,12", "quality_seeds": 1 if quick else 3,
                "quality_steps": 5 if quick else 200, "data_mb": 1 if quick else 16, "big_mb": 4 if quick else 1024,
                "eval_kb": 64 if quick else 160}
    for key, value in defaults.items():
        if getattr(ns, key) is None:
            setattr(ns, key, value)
    ns.steps = tuple(int(x) for x in str(ns.steps).split(","))
    ns.only = [s.strip() for s in ns.only.split(",") if s.strip()]
    ns.systems = [s.strip() for s in ns.systems.split(",")] if ns.systems else None
    ns.setups = [s.strip() for s in ns.setups.split(",")] if ns.setups else None
    known = [s.name for s in common.setups(False)]
    if ns.setups and not set(ns.setups) <= set(known):
        p.error(f"--setups: unknown model(s) {sorted(set(ns.setups) - set(known))}; choose from {known}")
    unknown = [s for s in ns.only if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {SECTIONS}")
    if "train" in ns.only and "peak" not in ns.only:  # utilisation and the CPU's class need it (3 s)
        ns.only.insert(0, "peak")
    ns.train_kb, ns.peak_size, ns.peak_seconds = (256, 1024, 1.0) if quick else (0, 2048, 3.0)
    if ns.device == "cuda":
        import torch

        if not torch.cuda.is_available():  # the engine would fall back to the CPU and the figures would lie
            p.error(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
        if "--only" not in (argv if argv is not None else sys.argv):
            ns.only = ["peak", "train"]
        ns.train_kb, ns.peak_size, ns.peak_seconds = 0, 8192, 2.0
        # A BERT-base step on a data-centre GPU takes tens of milliseconds: 50 steps between the short and the
        # long run keep the difference well above the timer's and the run's fixed costs' noise.
        ns.steps = (10, 60) if quick else ns.steps
        ns.rounds = 1 if quick else ns.rounds
    if quick:
        ns.no_install = True
        if ns.write_results and ns.device == "cpu":
            p.error(QUICK_CPU_NOT_RECORDED)
    return ns


def main(argv=None) -> int:
    ns = parse(argv)
    if ns.render:
        render_recorded()
        return 0
    for path in ns.merge_json or []:
        write_where_it_belongs(json.loads(Path(path).read_text()))
    if ns.merge_json:
        return 0
    started = time.time()
    if not ns.no_install and {"train", "data"} & set(ns.only):
        for install in (common.install_trainer_deps, common.install_st_venv):
            failure = install(log)
            if failure:
                log(f"could not install a peer: {failure}")
    run_sections = {"peak": section_peak, "train": section_train, "data": section_data, "eval": section_eval,
                    "padding": section_padding, "quality": section_quality}
    with tempfile.TemporaryDirectory(prefix="lmcore-bench-") as tmp:
        b = Bench(ns, Path(tmp))
        b.results.update({"machine": {**machine(), "device": ns.device}, "date": datetime.date.today().isoformat(), "quick": ns.quick,
                          "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)})
        for name in (s for s in SECTIONS if s in ns.only):
            section_start = time.time()
            log(f"section {name}")
            b.results["sections"][name] = run_sections[name](b)
            b.results["sections"][name]["seconds"] = time.time() - section_start
            if ns.json:  # what is measured so far survives a later section's failure or a time limit
                Path(ns.json).write_text(json.dumps(b.results, indent=2))
    b.results["seconds"] = time.time() - started
    text = report.render(b.results)
    print(text)
    if ns.json:
        Path(ns.json).write_text(json.dumps(b.results, indent=2))
    if ns.write_results:
        write_where_it_belongs(b.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
