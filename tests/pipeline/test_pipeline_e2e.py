"""End to end, as a user runs it: scripts/up starts a real Prefect server, the process work pool, a worker and the
MLflow UI (ports free, state in a temporary folder); `prefect deployment run pretrain/from-scratch --watch` trains a
tiny BERT on a user's corpus (only `corpus` given: scored on a split of it, registered under its own name) and a
tiny ELECTRA on two ranks, with the progress lines in the watching terminal and each line once; a run with a config
transformers refuses fails at once with the reason in the terminal; MLflow then holds finished runs with
perplexity and two registered ELECTRA models that load and predict; headless Chromium renders both UIs (the MLflow
runs table on its training view, with the perplexity column). scripts/down stops everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.pipeline_support import (QUIET_ENV, ROOT, SAMPLE, TINY, TINY_ELECTRA, artifacts_dir, child_runs,
                                    free_port, write_lines)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    env = {**os.environ, **QUIET_ENV, **ports, "PYTHON": sys.executable, "PREFECT_HOME": str(tmp / "prefect"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PIPELINE_HOME": str(tmp / "pipeline"),
           "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"}  # no COLUMNS: prefect.toml unwraps
    env.pop("MLFLOW_RUN_ID", None)
    start = time.time()
    up = subprocess.run([str(ROOT / "scripts" / "up")], env=env, capture_output=True, text=True, timeout=300)
    timings = {"scripts_up_s": round(time.time() - start, 1)}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{ports['MLFLOW_PORT']}" in up.stdout
        for name in ("prefect-server", "mlflow-ui"):
            timings[f"{name}_up_s"] = float(up.stdout.split(f"{name}: up after ")[1].split(" s")[0])
        yield {"env": env, "tmp": tmp, "timings": timings, **ports}
    finally:
        down = subprocess.run([str(ROOT / "scripts" / "down")], env=env, capture_output=True, text=True, timeout=120)
        pids = list((tmp / "prefect" / "pipeline").glob("*.pid"))
        (artifacts_dir() / "e2e-timings.json").write_text(json.dumps(timings, indent=2))
        assert down.returncode == 0 and not pids, down.stdout + down.stderr


def prefect(stack, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=stack["env"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def run_deployment(stack, params: dict, label: str, ok: bool = True) -> str:
    start = time.time()
    out = prefect(stack, "deployment", "run", "pretrain/from-scratch", "--params", json.dumps(params), "--watch")
    stack["timings"][f"deployment_run_{label}_s"] = round(time.time() - start, 1)
    if ok:
        assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    else:
        assert out.returncode != 0, out.stdout[-3000:]
    return out.stdout + out.stderr


def mlflow_client(stack):
    from mlflow.tracking import MlflowClient

    uri = stack["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parent_of(client, register_as: str, experiment: str = "pretrain", status: str | None = None):
    """The one parent run registering as `register_as` (with `status`: the one in that state)."""
    exp = client.get_experiment_by_name(experiment)
    where = f"tags.stage = 'pretrain' and params.register_as = '{register_as}'"
    (run,) = client.search_runs([exp.experiment_id], where + (f" and attributes.status = '{status}'" if status else ""))
    return run


def test_deployment_runs_bert_and_electra_tracked_in_mlflow(stack):
    mine = write_lines(stack["tmp"] / "corpora" / "mine.txt", (SAMPLE / "train.txt").read_text().splitlines()[:3000])
    # Only the corpus (and small settings): perplexity on a split of it, registered as mine-bert.
    watched = run_deployment(stack, {"corpus": str(mine), "args": TINY}, "bert")
    assert "step 20/20" in watched  # the engine's progress lines reach the terminal that watches the run
    watched = run_deployment(stack, {"corpus": str(mine), "model_type": "electra", "args": TINY_ELECTRA,
                                     "nproc_per_node": 2, "register_as": "e2e-electra"}, "electra_2_ranks")
    # Two ranks, each line once: the closing perplexity line of the one evaluation, a progress line.
    assert watched.count("Perplexity:") == 1 and watched.count("step 10/20") == 1, watched[-6000:]
    assert "ELECTRA: generator from args.generator_config (hidden 32)" in watched  # which shape, said
    client = mlflow_client(stack)
    for model_type, name in (("bert", "mine-bert"), ("electra", "e2e-electra")):
        run = parent_of(client, name)
        assert run.info.status == "FINISHED"
        assert run.data.tags["prefect.deployment"] == "from-scratch" and run.data.tags["prefect.flow_run_id"]
        assert 1 < run.data.metrics["perplexity"] < 1000
        assert run.data.params["corpus.eval_split"] == "0.05 of the corpus"
        assert run.data.params["args.config.hidden_size" if model_type == "bert"
                               else "args.discriminator_config.hidden_size"] == "32"
        children = child_runs(client, run.info.run_id)
        (evaluation,) = [r for n, rs in children.items() if n.startswith("evaluate") for r in rs]
        assert evaluation.data.params["eval_file"].startswith(stack["env"]["PIPELINE_HOME"])
        # The ELECTRA run prepares the same corpus: Prefect serves it from the cache, so no prepare_corpus run.
        cached = model_type == "electra"
        assert run.data.tags["cache.prepare_corpus"] == str(cached)
        assert ({"train_tokenizer", "pretrain", "register"} | (set() if cached else {"prepare_corpus"})) \
            <= set(children)
        assert all(r.info.status == "FINISHED" for rs in children.values() for r in rs)
        (train,) = children["pretrain"]
        steps = [m.step for m in client.get_metric_history(train.info.run_id, "train_loss")]
        assert steps == list(range(1, 21))  # every step, logged once: only rank 0 logs
        assert client.get_metric_history(train.info.run_id, "tokens_per_second")
        (tokenizer,) = children["train_tokenizer"]
        assert "tokenizer" in {a.path for a in client.list_artifacts(tokenizer.info.run_id)}
        on_parent = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"training_curves.png", "corpus_statistics.json"} <= on_parent, on_parent
    electra = parent_of(client, "e2e-electra")
    assert 0.0 <= electra.data.metrics["discriminator_accuracy"] <= 1.0
    for name in ("baseline_accuracy", "precision", "recall", "f1", "auc"):
        assert f"discriminator_{name}" in electra.data.metrics, name
    learned = electra.data.tags["discriminator.learned"]
    assert learned in ("true", "false") and (learned == "true") != ("has learned nothing" in watched)
    assert electra.data.metrics["generator_perplexity"] == pytest.approx(electra.data.metrics["perplexity"])
    names = {m.name for m in client.search_registered_models()}
    assert "mine-bert" in names and not any(n.startswith(("sample-data", "lm-bert")) for n in names)
    check_registered_electra(stack)


def read_failure(watched: str) -> list[str]:
    """The watched lines of a failed run after Prefect's header (flow run name, UUID, parameters, URL), up to
    "Flow run finished", checked: at most 15, no traceback, the error among the first log lines."""
    lines = watched.split("Flow run finished")[0].splitlines()
    lines = [t for t in lines if not t.startswith(("Creating flow run", "Created flow run", "└──"))]
    logged = [t for t in lines if t.startswith("▪")]
    assert len(lines) <= 15 and "Traceback" not in watched, "\n".join(lines)
    assert any("failed: " in t for t in logged[:3]), "\n".join(lines)
    return lines


def test_failing_runs_say_why_in_a_few_lines_and_are_not_retried(stack):
    """Bad input under --watch: the reason once, where the setting lives, in at most 15 lines with no traceback
    (kept in the run's log file and as error.txt on the MLflow run), and nothing retried. A config transformers
    refuses (hidden_size 65 with 2 heads) is found before any work; a Parquet folder without a `text` column
    names args.text_column, on one line however long (no wrapping when the output is not a terminal)."""
    corpus = write_lines(stack["tmp"] / "corpora" / "odd.txt", (SAMPLE / "eval.txt").read_text().splitlines())
    bad = {**TINY, "config": {**TINY["config"], "hidden_size": 65}}
    watched = run_deployment(stack, {"corpus": str(corpus), "args": bad, "register_as": "e2e-odd"}, "failing",
                             ok=False)
    lines = read_failure(watched)
    assert sum("args.config: bert refuses this model: The hidden size (65)" in t for t in lines) == 1, watched
    client = mlflow_client(stack)
    flow_run_id = [t for t in watched.splitlines() if "UUID:" in t][0].split()[-1]
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id],
                                f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert run.info.status == "FAILED" and "pretrain" not in child_runs(client, run.info.run_id)
    assert "error.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}

    import pandas as pd

    folder = stack["tmp"] / "corpora" / "copyrights"
    folder.mkdir(parents=True)
    texts = (SAMPLE / "eval.txt").read_text().splitlines()
    pd.DataFrame({"content": texts}).to_parquet(folder / "part-0.parquet")
    watched = run_deployment(stack, {"corpus": str(folder)}, "missing_column", ok=False)
    lines = read_failure(watched)
    (line,) = [t for t in lines if "no 'text' column" in t]
    assert "part-0.parquet" in line and "set args.text_column to the one holding the text" in line, watched
    flow_run_id = [t for t in watched.splitlines() if "UUID:" in t][0].split()[-1]
    kept = stack["tmp"] / "pipeline" / "logs" / f"{flow_run_id}.log"
    assert "Traceback (most recent call last)" in kept.read_text()


def test_readme_blocks_marked_runnable_run_as_written(stack):
    """Every fenced block the README marks `<!-- runnable -->` runs as written from the repository root against
    this stack (bash with the virtualenv on PATH, Python in it): the settings example (a Parquet folder's
    `content` column, args over the demo preset) and reading the corpus table back with mlflow.load_table (after
    the commands, whose runs it reads)."""
    import re
    from pathlib import Path

    blocks = re.findall(r"<!-- runnable -->\n```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert {"bash", "python"} <= {lang for lang, _ in blocks}, blocks
    env = {**stack["env"], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    said = {}
    for lang, code in sorted(blocks, key=lambda b: b[0] != "bash"):  # the commands first: the snippets read runs
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        start = time.time()
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        stack["timings"][f"readme_{lang}_{len(said)}_s"] = round(time.time() - start, 1)
        assert out.returncode == 0, f"{code}\n---\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        said[code] = out.stdout + out.stderr
    watched = next(v for k, v in said.items() if "text_column" in k)
    assert "settings: preset 'demo' with args ['config', 'max_steps', 'text_column'] over it" in watched
    # The failing-runs test's missing-column run used a folder of that name too (FAILED): this one finished.
    run = parent_of(mlflow_client(stack), "copyrights-bert", status="FINISHED")
    assert (run.data.params["args.config.hidden_size"], run.data.params["args.config.num_hidden_layers"]) == \
        ("64", "1")
    table = next(v for k, v in said.items() if "load_table" in k)
    assert table.split()[:4] == ["source", "rows", "documents", "tokens"], table


def check_registered_electra(stack):
    import mlflow

    mlflow.set_tracking_uri(stack["env"]["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(stack["env"]["MLFLOW_TRACKING_URI"])
    client = mlflow_client(stack)
    names = {m.name for m in client.search_registered_models()}
    assert {"mine-bert", "e2e-electra-generator", "e2e-electra-discriminator"} <= names
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
    bert = parent_of(client, "mine-bert")
    run_url = f"http://127.0.0.1:{stack['MLFLOW_PORT']}/#/experiments/{exp.experiment_id}/runs/{bert.info.run_id}"
    training_view = (f"http://127.0.0.1:{stack['MLFLOW_PORT']}/#/experiments/{exp.experiment_id}/runs"
                     "?workflowType=machine_learning&viewStateShareKey=training")
    artifacts_url = f"http://127.0.0.1:{stack['PREFECT_PORT']}/artifacts"
    names = [r.info.run_name for r in client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")]
    # What each page must show: the runs, the deployments, and where a user reads the perplexity (the parent
    # run's page in MLflow, the evaluation table artifact in Prefect).
    pages = [("mlflow-runs.png", runs_url, names), ("mlflow-training-view.png", training_view, ["perplexity"]),
             ("prefect-deployments.png", deployments_url, ["from-scratch"]),
             ("mlflow-run.png", run_url, ["perplexity"]), ("prefect-artifacts.png", artifacts_url, None)]
    folder = artifacts_dir()
    for name, url, expected in pages:
        (folder / name).unlink(missing_ok=True)
        chromium(url, stack["tmp"] / "chromium", folder / name)
        assert (folder / name).stat().st_size > 20_000, f"{name}: blank page?"
        if expected:
            dom = chromium(url, stack["tmp"] / "chromium")
            assert any(e in dom for e in expected), f"{url} shows none of {expected}"
