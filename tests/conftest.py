"""Shared fixtures: small corpora written by the tests, tiny model configs per model type, models trained once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from lmcore.data import sample_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two threads on this project's 2-core machines, shared out when pytest-xdist runs tests in parallel processes.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root. Tests and helpers name its files from here, whatever folder of tests/ they sit in."""
OWN_PEAK_MB = 'next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024'
"""An expression for a child script: that process's own peak resident memory in MB (VmHWM). Not ru_maxrss: Linux
carries the parent's (pytest's) peak over fork + exec into it."""

LONGEST_FIRST = (
    "tests/pipeline/test_pipeline_multinode.py",
    "tests/pipeline/test_pipeline_flows.py",
    "tests/pipeline/test_pipeline_e2e.py",
    "tests/bench/test_bench.py",
    "tests/pipeline/test_pipeline_sweep.py",
    "tests/engine/training/test_compile.py",
    "tests/pipeline/test_pipeline_corpora.py",
    "tests/pipeline/test_downstream_flows.py",
    "tests/engine/data/test_corpora.py",
    "tests/engine/training/test_token_weighting.py",
    "tests/engine/training/test_distributed.py",
)
"""The suite's longest files, longest first (each file's total, scripts/test on 2 cores, 2026-12-03: 588 s down to
112 s). They are handed out first: with pytest-xdist's --dist loadfile a long file started last would leave one
process working alone at the end (the rest of the files keep their order). pytest-xdist 3.7+ would otherwise
re-sort the files by their number of tests, most first (--loadscope-reorder, on by default), which hands these
files, each of a few long tests, out last: `pytest_configure` turns that off."""


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's own reordering (3.7+): ours stands instead
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


SAMPLE = sample_corpus.ensure()
"""The sample corpus's folder (train.txt, eval.txt), written on first use (lmcore.data.sample_corpus)."""

TINY = {
    "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "camembert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "longformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                   "attention_window": 16},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2},
    "openai-gpt": {"n_embd": 32, "n_layer": 2, "n_head": 2},
}
CAUSAL = {"gpt2", "openai-gpt"}


def sample_lines(name: str = "train.txt", n: int | None = None) -> list[str]:
    lines = (SAMPLE / name).read_text().splitlines()
    return lines if n is None else lines[:n]


@pytest.fixture
def corpus(tmp_path) -> dict:
    """A train and a test file written by the test: slices of the sample corpus."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(sample_lines("train.txt", 1200)) + "\n")
    (data / "test.txt").write_text("\n".join(sample_lines("eval.txt", 60)) + "\n")
    return {"train": str(data / "train.txt"), "test": str(data / "test.txt"), "dir": str(data)}


def tiny_args(model_type: str, tmp_path: Path, **overrides) -> dict:
    """Settings that train a tiny model of `model_type` in a few seconds on two CPU cores."""
    args = {
        "vocab_size": 2000, "min_frequency": 2, "max_seq_length": 64, "train_batch_size": 16, "eval_batch_size": 16,
        "learning_rate": 5e-3, "warmup_ratio": 0.05, "num_train_epochs": 1, "max_steps": 60, "save_steps": -1,
        "save_model_every_epoch": False, "logging_steps": 20, "overwrite_output_dir": True,
        "output_dir": str(tmp_path / f"out-{model_type}"), "best_model_dir": str(tmp_path / "best"),
        "cache_dir": str(tmp_path / "cache"), "mlm": model_type not in CAUSAL,
        "config": dict(TINY[model_type]), "reprocess_input_data": False,
        # bf16 autocast costs more than it saves on models this small; the default path has its own tests.
        "mixed_precision": "no",
    }
    args.update(overrides)
    return args


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="lmcore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    yield


@pytest.fixture(scope="session")
def trained_dirs(tmp_path_factory) -> dict:
    """A tiny BERT and a tiny GPT-2 trained from scratch once per session, for fine-tuning tests."""
    from lmcore import LanguageModelingModel

    root = tmp_path_factory.mktemp("pretrained")
    train = root / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 1200)) + "\n")
    out = {}
    for mt in ("bert", "gpt2"):
        args = tiny_args(mt, root, max_steps=40)
        model = LanguageModelingModel(mt, None, args=args, train_files=str(train))
        model.train_model(str(train))
        out[mt] = args["output_dir"]
    return out
