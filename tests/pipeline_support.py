"""Shared by the pipeline tests: tiny model settings, an isolated MLflow store and pipeline folder, free ports."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from lmcore.data import sample_corpus
from tests.conftest import ROOT

SAMPLE = sample_corpus.ensure()
"""The sample corpus's folder (train.txt, eval.txt), written on first use (lmcore.data.sample_corpus)."""
ARTIFACTS = ROOT / "test-artifacts"

TINY = {"vocab_size": 500, "max_seq_length": 64, "train_batch_size": 8, "max_steps": 20, "learning_rate": 1e-3,
        "save_steps": -1, "logging_steps": 10,
        "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}}
_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
          "embedding_size": 32}
TINY_ELECTRA = {**{k: v for k, v in TINY.items() if k != "config"},
                "generator_config": dict(_SMALL), "discriminator_config": dict(_SMALL)}

QUIET_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
             "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def isolate(monkeypatch, tmp: Path) -> dict:
    """Point the pipeline's MLflow store and output folder into `tmp`; returns the values set."""
    values = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PIPELINE_HOME": str(tmp / "pipeline"),
              **QUIET_ENV}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir() -> Path:
    """Where tests keep files for CI to collect (screenshots); kept out of git by its own .gitignore."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    return ARTIFACTS


def child_runs(client, parent_id: str) -> dict:
    """{run name: [runs]} of the children of `parent_id`."""
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    out: dict = {}
    for r in runs:
        out.setdefault(r.info.run_name, []).append(r)
    return out


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def env_without(*names: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


@contextlib.contextmanager
def prefect_test_home(tmp: Path):
    """A Prefect test server for the block, with the MLflow store, the pipeline folder and Prefect's own state all
    in `tmp` (for module-scoped fixtures of tests that call flows)."""
    import pytest
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**QUIET_ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
                     "PIPELINE_HOME": str(tmp / "pipeline")}.items():
            mp.setenv(k, v)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        with temporary_settings({PREFECT_HOME: tmp / "prefect", PREFECT_LOCAL_STORAGE_PATH: tmp / "results"}), \
                prefect_test_harness(server_startup_timeout=60):
            yield tmp
