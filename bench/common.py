"""What the bench's parts share: the model configurations, the corpus helpers, the subprocess runner and FLOP counts.

Importable without torch (the Simple Transformers worker runs in its own venv and imports only this module's
constants through `peers/`), so heavy imports stay inside functions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
ST_VENV = BENCH / ".venv-st"
ST_PYTHON = ST_VENV / "bin" / "python"
# Trainer needs accelerate, which the product does not: installed beside the bench, not into the project's venv.
TRAINER_DEPS = BENCH / ".deps-trainer"
MARKER = "BENCH_RESULT "


def __getattr__(name: str) -> Path:
    """SAMPLE, SAMPLE_EVAL: the sample corpus's train and held-out files (lmcore/data/sample_corpus.py), written on
    first use by the project's Python; looked up only when asked for, so the peers' own venvs never write them."""
    parts = {"SAMPLE": "train.txt", "SAMPLE_EVAL": "eval.txt"}
    if name not in parts:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lmcore.data import sample_corpus

    return sample_corpus.ensure() / parts[name]

VOCAB = 8000
BLOCK = 128
BATCH = 32
# The model: hidden 256, 4 layers, 4 heads, FFN 1024 (BERT, GPT-2 and the ELECTRA discriminator).
ENCODER = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
GPT2 = {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_inner": 1024}
# ELECTRA's generator at a quarter of the discriminator's width (the paper's ratio), same depth.
GENERATOR = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 1, "intermediate_size": 256}
# --quick: a model small enough that every system's start-up dominates; only checks that the bench runs.
TINY_ENCODER = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}
TINY_GPT2 = {"n_embd": 64, "n_layer": 1, "n_head": 2, "n_inner": 128}
TINY_GENERATOR = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32}


@dataclass(frozen=True)
class Setup:
    """One benchmarked configuration: the model type, its objective and its architecture."""

    name: str
    model_type: str
    mlm: bool
    config: dict
    generator_config: dict | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "model_type": self.model_type, "mlm": self.mlm, "config": self.config,
                "generator_config": self.generator_config}


# --device cuda: BERT-base shapes (and GPT-2 small's); ELECTRA-Base's generator at a third of the width.
BASE_ENCODER = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
BASE_GPT2 = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": 3072}
BASE_GENERATOR = {"hidden_size": 256, "num_hidden_layers": 12, "num_attention_heads": 4, "intermediate_size": 1024}


def log(msg: str) -> None:
    """A bench's progress line on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def setups(quick: bool, base: bool = False) -> list[Setup]:
    enc, gpt, gen = (TINY_ENCODER, TINY_GPT2, TINY_GENERATOR) if quick else (ENCODER, GPT2, GENERATOR)
    # ELECTRA-Small's shared embedding width, set explicitly so both ELECTRA implementations build the same pair.
    embedding = 32 if quick else 128
    if base:
        enc, gpt, gen, embedding = BASE_ENCODER, BASE_GPT2, BASE_GENERATOR, 768
    return [Setup("BERT-MLM", "bert", True, enc), Setup("GPT-2-CLM", "gpt2", False, gpt),
            Setup("ELECTRA", "electra", True, {**enc, "embedding_size": embedding},
                  {**gen, "embedding_size": embedding})]


# ---------------------------------------------------------------------------------------------------------------
# Running one measured process
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Measured:
    """One worker process: its wall time, peak RSS (its own and its children's, in MB), and the JSON it reported."""

    wall_s: float
    peak_rss_mb: float
    result: dict
    returncode: int
    log: str


def run_worker(cmd: list[str], env: dict | None = None, timeout: float = 900, cwd: Path | None = None) -> Measured:
    """Run `cmd` in a fresh process; wall time from spawn to exit; peak RSS from wait4's rusage of that child
    alone (RUSAGE_CHILDREN would be the maximum over every child so far). The worker reports by printing one
    line `BENCH_RESULT {json}`."""
    full_env = {**os.environ, **bench_env(), **(env or {})}
    start = time.perf_counter()
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, lambda: _kill_group(proc.pid))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    result = {}
    for line in lines:
        if line.startswith(MARKER):
            # Several ranks may print their results at once: the first object on the line is this run's (rank 0's
            # figures are every rank's: the timings are taken after the last collective).
            result, _ = json.JSONDecoder().raw_decode(line[len(MARKER):])
    # ru_maxrss is in kilobytes on Linux.
    return Measured(wall, usage.ru_maxrss / 1024, result, proc.returncode, "".join(lines[-40:]))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def bench_env() -> dict:
    """Nothing reaches a hub or a tracker; every system uses both cores."""
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "WANDB_DISABLED": "true", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "true",
            "DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(os.cpu_count() or 1)}


def report(result: dict) -> None:
    """Called by workers: the one line the runner reads back."""
    print(MARKER + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------------------------

def repeat_corpus(target: Path, size_bytes: int, source: Path | None = None) -> Path:
    """`source` (default: the sample corpus) repeated until the file reaches `size_bytes` (whole copies; the last one
    cut at a line end)."""
    data = (source or __getattr__("SAMPLE")).read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        written = 0
        while written + len(data) <= size_bytes:
            f.write(data)
            written += len(data)
        rest = data[:size_bytes - written]
        f.write(rest[:rest.rfind(b"\n") + 1])
    return target


def held_out_split(work: Path) -> tuple[Path, Path]:
    """Train on the first 95% of the sample corpus's lines and hold out the rest (plus its eval file): a held-out
    set large enough that perplexity differences of 2% are above its noise."""
    lines = __getattr__("SAMPLE").read_text(encoding="utf-8").splitlines(keepends=True)
    cut = int(len(lines) * 0.95)
    train, held = work / "quality-train.txt", work / "quality-heldout.txt"
    train.write_text("".join(lines[:cut]), encoding="utf-8")
    held.write_text("".join(lines[cut:]) + __getattr__("SAMPLE_EVAL").read_text(encoding="utf-8"), encoding="utf-8")
    return train, held


def st_available() -> bool:
    return ST_PYTHON.exists() and (ST_VENV / ".bench-installed").exists()


def install_st_venv(log) -> str | None:
    """Create bench/.venv-st with Simple Transformers 0.70.8 (torch pinned first; it needs transformers 4).
    Returns None on success, else why it failed."""
    if st_available():
        return None
    steps = [["python3", "-m", "venv", str(ST_VENV)],
             [str(ST_VENV / "bin" / "pip"), "install", "-q", "torch==2.13.0"],
             [str(ST_VENV / "bin" / "pip"), "install", "-q", "simpletransformers==0.70.8", "transformers==4.57.6",
              "datasets<5"]]
    for cmd in steps:
        log(f"installing: {' '.join(cmd)}")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(ST_VENV, ignore_errors=True)
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}"
    (ST_VENV / ".bench-installed").write_text("ok\n")
    return None


def trainer_available() -> bool:
    return (TRAINER_DEPS / "accelerate").is_dir()


def install_trainer_deps(log) -> str | None:
    """accelerate (Trainer's one requirement beyond transformers) into bench/.deps-trainer, no dependencies
    (the project's venv already has them). Returns None on success, else why it failed."""
    if trainer_available():
        return None
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TRAINER_DEPS),
           "accelerate>=1.1.0"]
    log(f"installing: {' '.join(cmd)}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    return None if done.returncode == 0 else f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"


def write_marked_section(section: str) -> Path:
    """Put `section` (which starts with `<!-- name: begin -->` and ends with `<!-- name: end -->`) into
    bench/RESULTS.md in place of the section of that name, or at the end when there is none yet; bench/run.py keeps
    such sections when it re-renders the rest."""
    md = BENCH / "RESULTS.md"
    begin, end = section.splitlines()[0], section.splitlines()[-1]
    text = md.read_text()
    if begin in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(text)
    return md
