"""End to end, as a user runs it: scripts/up starts a real Prefect server, the process work pool, a worker and the
MLflow UI (ports free, state in a temporary folder); `prefect deployment run pretrain/from-scratch` trains a tiny
BERT and a tiny ELECTRA on two ranks; MLflow then holds finished runs with perplexity and two registered ELECTRA
models that load and predict; headless Chromium renders both UIs. scripts/down stops everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from pipeline_support import (QUIET_ENV, REPO, SAMPLE, TINY, TINY_ELECTRA, artifacts_dir, child_runs, free_port)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    env = {**os.environ, **QUIET_ENV, **ports, "PYTHON": sys.executable, "PREFECT_HOME": str(tmp / "prefect"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PIPELINE_HOME": str(tmp / "pipeline"),
           "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"}
    env.pop("MLFLOW_RUN_ID", None)
    start = time.time()
    up = subprocess.run([str(REPO / "scripts" / "up")], env=env, capture_output=True, text=True, timeout=300)
    timings = {"scripts_up_s": round(time.time() - start, 1)}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{ports['MLFLOW_PORT']}" in up.stdout
        timings["prefect_server_start_s"] = float(up.stdout.split("prefect-server: up after ")[1].split(" s")[0])
        yield {"env": env, "tmp": tmp, "timings": timings, **ports}
    finally:
        down = subprocess.run([str(REPO / "scripts" / "down")], env=env, capture_output=True, text=True, timeout=120)
        pids = list((tmp / "prefect" / "pipeline").glob("*.pid"))
        (artifacts_dir() / "e2e-timings.json").write_text(json.dumps(timings, indent=2))
        assert down.returncode == 0 and not pids, down.stdout + down.stderr


def prefect(stack, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=stack["env"], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def run_deployment(stack, params: dict, label: str) -> str:
    start = time.time()
    out = prefect(stack, "deployment", "run", "pretrain/from-scratch", "--params", json.dumps(params), "--watch")
    stack["timings"][f"deployment_run_{label}_s"] = round(time.time() - start, 1)
    assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def mlflow_client(stack):
    from mlflow.tracking import MlflowClient

    uri = stack["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parent_of(client, register_as: str):
    exp = client.get_experiment_by_name("pretrain")
    (run,) = client.search_runs([exp.experiment_id],
                                f"tags.stage = 'pretrain' and params.register_as = '{register_as}'")
    return run


def test_deployment_runs_bert_and_electra_tracked_in_mlflow(stack):
    corpus = {"corpus": str(SAMPLE / "train.txt"), "eval_corpus": str(SAMPLE / "eval.txt")}
    run_deployment(stack, {**corpus, "args": TINY, "register_as": "e2e-bert"}, "bert")
    run_deployment(stack, {**corpus, "model_type": "electra", "args": TINY_ELECTRA, "nproc_per_node": 2,
                           "register_as": "e2e-electra"}, "electra_2_ranks")
    client = mlflow_client(stack)
    for model_type in ("bert", "electra"):
        run = parent_of(client, f"e2e-{model_type}")
        assert run.info.status == "FINISHED"
        assert run.data.tags["prefect.deployment"] == "from-scratch" and run.data.tags["prefect.flow_run_id"]
        assert 1 < run.data.metrics["perplexity"] < 1000
        assert run.data.params["args.config.hidden_size" if model_type == "bert"
                               else "args.discriminator_config.hidden_size"] == "32"
        children = child_runs(client, run.info.run_id)
        # The ELECTRA run prepares the same corpus: Prefect serves it from the cache, so no prepare_corpus run.
        cached = model_type == "electra"
        assert run.data.tags["cache.prepare_corpus"] == str(cached)
        assert ({"train_tokenizer", "pretrain"} | (set() if cached else {"prepare_corpus"})) <= set(children)
        assert all(r.info.status == "FINISHED" for rs in children.values() for r in rs)
        (train,) = children["pretrain"]
        steps = [m.step for m in client.get_metric_history(train.info.run_id, "train_loss")]
        assert steps == list(range(1, 21))  # every step, logged once: only rank 0 logs
        assert client.get_metric_history(train.info.run_id, "tokens_per_second")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"loss_curve.png", "tokenizer"} <= artifacts
    electra = parent_of(client, "e2e-electra")
    assert 0.0 <= electra.data.metrics["discriminator_accuracy"] <= 1.0
    assert electra.data.metrics["generator_perplexity"] == pytest.approx(electra.data.metrics["perplexity"])
    check_registered_electra(stack)


def check_registered_electra(stack):
    import mlflow

    mlflow.set_tracking_uri(stack["env"]["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(stack["env"]["MLFLOW_TRACKING_URI"])
    client = mlflow_client(stack)
    names = {m.name for m in client.search_registered_models()}
    assert {"e2e-bert", "e2e-electra-generator", "e2e-electra-discriminator"} <= names
    generator = mlflow.pyfunc.load_model("models:/e2e-electra-generator/latest")
    filled = generator.predict(["the module returns a [MASK] of values"])
    assert len(filled) > 0
    discriminator = mlflow.pyfunc.load_model("models:/e2e-electra-discriminator/latest")
    out = discriminator.predict(["the module returns a list of values", "short text"])
    assert len(out) == 2
    for tokens, probs in zip(out["tokens"], out["replaced_probability"]):
        assert len(tokens) == len(probs) > 2 and all(0.0 <= p <= 1.0 for p in probs)


def test_bad_parameter_is_rejected_naming_it(stack):
    out = prefect(stack, "deployment", "run", "pretrain/from-scratch", "--param", "nproc_per_node=\"two\"")
    assert out.returncode != 0 and "nproc_per_node" in out.stdout + out.stderr
    out = prefect(stack, "deployment", "run", "pretrain/from-scratch", "--param", "model_type=\"bertt\"")
    assert out.returncode != 0 and "model_type" in out.stdout + out.stderr


def chromium(url: str, tmp, screenshot=None) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}",
             "--virtual-time-budget=15000", "--window-size=1920,1080"]
    args = [*flags, f"--screenshot={screenshot}"] if screenshot else [*flags, "--dump-dom"]
    out = subprocess.run([shutil.which("chromium"), *args, url], capture_output=True, text=True, timeout=120)
    return out.stdout


def test_browser_renders_mlflow_runs_and_prefect_deployments(stack):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    client = mlflow_client(stack)
    exp = client.get_experiment_by_name("pretrain")
    if exp is None:
        pytest.skip("no runs: the deployment test did not run first")
    runs_url = f"http://127.0.0.1:{stack['MLFLOW_PORT']}/#/experiments/{exp.experiment_id}/runs"
    deployments_url = f"http://127.0.0.1:{stack['PREFECT_PORT']}/deployments"
    bert = parent_of(client, "e2e-bert")
    run_url = f"http://127.0.0.1:{stack['MLFLOW_PORT']}/#/experiments/{exp.experiment_id}/runs/{bert.info.run_id}"
    artifacts_url = f"http://127.0.0.1:{stack['PREFECT_PORT']}/artifacts"
    names = [r.info.run_name for r in client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")]
    # What each page must show: the runs, the deployments, and where a user reads the perplexity (the parent
    # run's page in MLflow, the evaluation table artifact in Prefect).
    pages = [("mlflow-runs.png", runs_url, names), ("prefect-deployments.png", deployments_url, ["from-scratch"]),
             ("mlflow-run.png", run_url, ["perplexity"]), ("prefect-artifacts.png", artifacts_url, None)]
    folder = artifacts_dir()
    for name, url, expected in pages:
        (folder / name).unlink(missing_ok=True)
        chromium(url, stack["tmp"] / "chromium", folder / name)
        assert (folder / name).stat().st_size > 20_000, f"{name}: blank page?"
        if expected:
            dom = chromium(url, stack["tmp"] / "chromium")
            assert any(e in dom for e in expected), f"{url} shows none of {expected}"
