"""A sweep as a user runs it: `prefect deployment run pretrain/sweep` on the real stack (scripts/up: Prefect server,
worker, MLflow), 8 grid trials of a tiny BERT, the two hopeless ones (learning rate 1e-8) pruned during training;
the first run cancelled mid-sweep, the second (same parameters, `--watch`) resumes without running a finished trial
again, shows one line per trial, and ends with the nested trials, the table and the images on the sweep's MLflow run,
the Prefect table artifact and the best model registered with the alias `best`."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import optuna
import pytest
from optuna.trial import TrialState
from tests.pipeline.test_pipeline_e2e import mlflow_client, prefect, stack  # noqa: F401 (the module's stack fixture)
from tests.pipeline_support import SAMPLE, write_lines

pytestmark = pytest.mark.slow

SPACE = {"learning_rate": [3e-3, 2.5e-3, 2e-3, 1e-8], "warmup_ratio": [0.0, 0.1]}
ARGS = {"max_steps": 60, "vocab_size": 500, "max_seq_length": 32, "train_batch_size": 8, "learning_rate": 1e-3,
        "logging_steps": 20, "save_steps": 20, "evaluate_during_training_steps": 12,
        "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}


def _params(corpus: str) -> dict:
    return {"base": {"corpus": corpus, "model_type": "bert", "args": ARGS}, "space": SPACE, "method": "grid",
            "prune": {"margin": 0.5, "n_startup_trials": 2}, "name": "lr-warmup", "register_as": "tiny-sweep"}


def _study(stack):
    storage = f"sqlite:///{stack['tmp'] / 'sweeps.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _flow_run_state(stack, flow_run_id: str) -> str:
    api = stack["env"]["PREFECT_API_URL"]
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=10) as r:
        return json.loads(r.read())["state"]["type"]


def test_a_sweep_cancelled_midway_resumes_and_registers_its_best(stack):
    corpus = str(write_lines(stack["tmp"] / "sweep-corpus" / "notes.txt",
                             (SAMPLE / "train.txt").read_text().splitlines()[:3000]))
    params = json.dumps(_params(corpus))
    started = prefect(stack, "deployment", "run", "pretrain/sweep", "--params", params)
    assert started.returncode == 0, started.stdout + started.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)[1]

    # Cancel once three trials have finished (the fourth is then starting or training).
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            finished = [t for t in _study(stack).trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        except (ValueError, KeyError, Exception):  # the study does not exist yet
            finished = []
        if len(finished) >= 3:
            break
        assert _flow_run_state(stack, flow_run_id) in ("SCHEDULED", "PENDING", "RUNNING"), "the sweep ended early"
        time.sleep(1)
    else:
        pytest.fail("three trials did not finish within 10 minutes")
    before = {t.user_attrs["key"]: t.number for t in finished}
    cancel = prefect(stack, "flow-run", "cancel", flow_run_id)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    deadline = time.time() + 120
    while _flow_run_state(stack, flow_run_id) != "CANCELLED" and time.time() < deadline:
        time.sleep(1)
    assert _flow_run_state(stack, flow_run_id) == "CANCELLED"

    watched = prefect(stack, "deployment", "run", "pretrain/sweep", "--params", params, "--watch", timeout=900)
    out = watched.stdout + watched.stderr
    assert watched.returncode == 0 and "Completed" in watched.stdout, out[-4000:]

    study = _study(stack)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    keys = [t.user_attrs["key"] for t in done]
    assert len(done) == 8 and len(set(keys)) == 8  # every grid point once: nothing finished ran twice
    assert all(before[k] == t.number for t in done for k in [t.user_attrs["key"]] if k in before)
    assert f"{len(before)} finished earlier" in out
    pruned = [t for t in done if t.state == TrialState.PRUNED]
    assert sorted(t.params["learning_rate"] for t in pruned) == [1e-8, 1e-8]
    assert all(max(t.intermediate_values) < ARGS["max_steps"] for t in pruned)  # stopped during training
    # One line per trial the second run finished, in the watching terminal.
    lines = re.findall(r"trial \d+ \(8 in the sweep\) (complete|pruned|failed): ", out)
    assert len(lines) == 8 - len(before) and lines.count("failed") == 0, out[-4000:]
    # The grid runs the two hopeless points last, so the resumed run is the one that prunes them.
    assert len(re.findall(r"pruned: learning_rate=1e-08, warmup_ratio=0(?:\.1)? -> pruned at step \d+: ", out)) == 2

    client = mlflow_client(stack)
    exp = client.get_experiment_by_name("sweeps")
    (sweep_run,) = client.search_runs([exp.experiment_id], "tags.stage = 'sweep'")
    assert sweep_run.info.status == "FINISHED"
    trials = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep_run.info.run_id}' "
                                                     "and tags.`sweep.state` != 'interrupted' and "
                                                     "attributes.run_name LIKE 'trial %'")
    assert len(trials) == 8
    assert {r.data.tags["sweep.state"] for r in trials} == {"complete", "pruned"}
    assert all("trial.learning_rate" in r.data.params for r in trials)
    names = {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    assert {"trials.json", "objective_vs_parameters.png", "training_curves.png",
            "parameter_importances.png"} <= names
    table = json.loads(open(client.download_artifacts(sweep_run.info.run_id, "trials.json")).read())
    states = [row[table["columns"].index("state")] for row in table["data"]]
    assert states.count("complete") == 6 and states.count("pruned") == 2
    assert sweep_run.data.metrics["trials_pruned"] == 2
    view = json.loads(exp.tags["mlflow.sharedViewState.training"])["selectedColumns"]
    assert view[:2] == ["params.`trial.learning_rate`", "params.`trial.warmup_ratio`"] and \
        "metrics.`perplexity`" in view and "tags.`sweep.state`" in view

    best = client.get_model_version_by_alias("tiny-sweep", "best")
    assert best.tags["sweep"] == study.study_name
    assert int(best.tags["sweep.trial"]) == study.best_trial.number
    assert float(best.tags["sweep.perplexity"]) == pytest.approx(study.best_value)
    assert study.best_trial.params["learning_rate"] != 1e-8

    key = "sweep-" + re.sub(r"[^a-z0-9]", "-", study.study_name.lower())
    artifact = prefect(stack, "artifact", "inspect", key)
    assert artifact.returncode == 0 and "pruned" in artifact.stdout and study.study_name in artifact.stdout, \
        artifact.stdout[-2000:]
