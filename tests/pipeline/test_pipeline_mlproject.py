"""`mlflow run . -e pretrain` as the README shows it: the pipeline's runs land in experiment `pretrain` (not in
Default), scored on a split of the corpus given, registered under that corpus's name. Slow: a temporary Prefect
server and a training in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_support import QUIET_ENV, ROOT, SAMPLE, TINY, child_runs, write_lines

pytestmark = pytest.mark.slow


def test_mlflow_run_logs_into_the_pretrain_experiment(tmp_path):
    from mlflow.tracking import MlflowClient

    corpus = write_lines(tmp_path / "notes.txt", (SAMPLE / "train.txt").read_text().splitlines()[:1500])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": uri, "PIPELINE_HOME": str(tmp_path / "pipeline"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    out = subprocess.run([sys.executable, "-m", "mlflow", "run", ".", "-e", "pretrain", "--env-manager", "local",
                          "-P", f"corpus={corpus}", "-P", f"args={json.dumps({**TINY, 'max_steps': 4})}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("pretrain")
    (parent,) = client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["perplexity"] > 1
    assert parent.data.params["register_as"] == "notes-bert"
    assert parent.data.params["corpus.eval_split"] == "0.05 of the corpus"
    assert {"prepare_corpus", "train_tokenizer", "pretrain", "register"} <= set(child_runs(client, parent.info.run_id))
    # The run `mlflow run` made in Default (no --experiment-name) points at the pipeline's parent run.
    (started,) = client.search_runs(["0"])
    assert started.data.tags["pipeline.parent_run_id"] == parent.info.run_id
    assert client.get_registered_model("notes-bert")
