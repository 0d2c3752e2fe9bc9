"""Several machines, played by several workers on this one: scripts/up with NODE_WORKERS=2 starts a Prefect server
on PostgreSQL, the MLflow UI over a PostgreSQL tracking store, a worker on the pool `local` and two on `nodes`
(`--limit 1` each: two "machines"); `prefect deployment run pretrain/from-scratch` with nnodes=2 trains through
torchrun's c10d rendezvous, one node job per worker.

- 2 nodes x 1 process train like 1 node x 2 processes (per-step losses), with one MLflow parent run, one registered
  model and both nodes' lines in the flow run's log;
- a node's training process killed mid-run is restarted by torchrun's elastic agent, and the final weights equal
  the uninterrupted run's;
- a node whose worker is gone for good fails the run within the rendezvous timeout, naming the node; nothing is left
  running in MLflow or Prefect.

And without servers: the image's entry point (`scripts/entrypoint node ...`) trains on two nodes. Slow; the
server-store tests need PostgreSQL at 127.0.0.1:5432 (LMCORE_TEST_POSTGRES names another: an admin URL whose
server lets it create and drop databases)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.pipeline_support import QUIET_ENV, ROOT, SAMPLE, artifacts_dir, child_runs, free_port, write_lines

pytestmark = pytest.mark.slow

ADMIN = os.environ.get("LMCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RDZV_TIMEOUT = 30
ARGS = {"vocab_size": 500, "max_seq_length": 64, "train_batch_size": 8, "max_steps": 30, "learning_rate": 1e-3,
        "save_steps": 10, "save_total_limit": 3, "logging_steps": 10, "mixed_precision": "no",
        "config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}}
TIMINGS: dict = {}


@pytest.fixture(scope="module")
def databases():
    """Two fresh PostgreSQL databases (Prefect's, MLflow's), dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    try:
        admin = psycopg2.connect(ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {ADMIN}: {e}")
    admin.autocommit = True
    names = {k: f"lmcore_{k}_{uuid.uuid4().hex[:8]}" for k in ("prefect", "mlflow")}
    server = ADMIN.rsplit("/", 1)[0]
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield {"prefect": server.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + names["prefect"],
               "mlflow": f"{server}/{names['mlflow']}"}
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodes")
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    env = {**os.environ, **QUIET_ENV, **ports, "PYTHON": sys.executable, "PREFECT_HOME": str(tmp / "prefect"),
           "PREFECT_API_DATABASE_CONNECTION_URL": databases["prefect"], "MLFLOW_TRACKING_URI": databases["mlflow"],
           "PIPELINE_HOME": str(tmp / "pipeline"), "NODE_WORKERS": "2", "COLUMNS": "400",
           "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"}
    env.pop("MLFLOW_RUN_ID", None)
    (tmp / "pipeline" / "models").mkdir(parents=True)
    start = time.time()
    up = subprocess.run([str(ROOT / "scripts" / "up")], env=env, capture_output=True, text=True, timeout=300)
    TIMINGS["scripts_up_with_2_node_workers_s"] = round(time.time() - start, 1)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "node-worker-1: started" in up.stdout and "node-worker-2: started" in up.stdout, up.stdout
        yield {"env": env, "tmp": tmp, "models": tmp / "pipeline" / "models", **ports}
    finally:
        down = subprocess.run([str(ROOT / "scripts" / "down")], env=env, capture_output=True, text=True, timeout=120)
        (artifacts_dir() / "multinode-timings.json").write_text(json.dumps(TIMINGS, indent=2))
        assert down.returncode == 0 and not list((tmp / "prefect" / "pipeline").glob("*.pid")), down.stdout


@pytest.fixture(scope="module")
def corpus(stack):
    return str(write_lines(stack["tmp"] / "corpora" / "nodes.txt",
                           (SAMPLE / "train.txt").read_text().splitlines()[:1500]))


def deployment_run(stack, params: dict) -> subprocess.Popen:
    """`prefect deployment run pretrain/from-scratch --watch`, as a user types it, in the background."""
    return subprocess.Popen([sys.executable, "-m", "prefect", "deployment", "run", "pretrain/from-scratch",
                             "--params", json.dumps(params), "--watch"], env=stack["env"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, label: str, ok: bool = True, timeout: int = 600) -> str:
    """Wait for the watching command; its output is kept in test-artifacts/multinode-<label>.log."""
    out = proc.communicate(timeout=timeout)[0]
    (artifacts_dir() / f"multinode-{label}.log").write_text(out)
    ending = "Flow run finished successfully in 'Completed'" if ok else "Flow run finished in state 'Failed'"
    assert (proc.returncode == 0) == ok and ending in out, out[-6000:]
    return out


def mlflow_client(stack):
    from mlflow.tracking import MlflowClient

    uri = stack["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parent_of(client, register_as: str):
    exp = client.get_experiment_by_name("pretrain")
    (run,) = client.search_runs([exp.experiment_id], f"params.register_as = '{register_as}'")
    return run


def losses(client, run) -> list[float]:
    history = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, ARGS["max_steps"] + 1))  # every step once: rank 0 logs
    return [m.value for m in history]


def seconds_per_step(client, run) -> float:
    """Steady-state time per step: tokens per step over the engine's tokens/s (the first steps, with start-up and
    the FLOP count, left out)."""
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "tokens_per_second") if m.step > 10]
    metrics = run.data.metrics
    return metrics["tokens_seen"] / metrics["global_step"] / statistics.median(rates)


def output_dir(stack, parent) -> Path:
    return stack["models"] / parent.data.tags["prefect.flow_run_id"]


def flow_runs(stack, name_prefix: str = "") -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["env"]["PREFECT_API_URL"]}), \
            get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [r for r in runs if r.name.startswith(name_prefix)]


@pytest.fixture(scope="module")
def two_nodes(stack, corpus):
    """The uninterrupted 2-node run the other tests compare with."""
    start = time.time()
    watched = finish(deployment_run(stack, {"corpus": corpus, "args": ARGS, "nnodes": 2, "nproc_per_node": 1,
                                            "rdzv_timeout": 120, "register_as": "nodes-bert"}), "2-nodes")
    TIMINGS["deployment_run_2_nodes_x_1_s"] = round(time.time() - start, 1)
    client = mlflow_client(stack)
    parent = parent_of(client, "nodes-bert")
    return {"watched": watched, "parent": parent, "out": output_dir(stack, parent)}


def test_two_nodes_train_like_one_node_with_two_processes(stack, corpus, two_nodes):
    start = time.time()
    finish(deployment_run(stack, {"corpus": corpus, "args": ARGS, "nproc_per_node": 2, "register_as": "one-bert"}),
           "1-node")
    TIMINGS["deployment_run_1_node_x_2_s"] = round(time.time() - start, 1)
    client = mlflow_client(stack)
    nodes, one = two_nodes["parent"], parent_of(client, "one-bert")
    assert nodes.info.status == one.info.status == "FINISHED"
    assert nodes.data.params["nnodes"] == "2" and "nnodes" not in one.data.params
    (train,) = child_runs(client, nodes.info.run_id)["pretrain"]
    (train_one,) = child_runs(client, one.info.run_id)["pretrain"]
    # Same data on the same ranks; only float summation order differs (a "node" here has both cores to itself).
    assert losses(client, train) == pytest.approx(losses(client, train_one), rel=1e-4)
    assert train.data.metrics["tokens_seen"] == train_one.data.metrics["tokens_seen"]
    states = [torch.load(f, weights_only=True) for f in sorted(two_nodes["out"].glob("checkpoint-*/training_state.pt"))]
    assert len(states) == 3 and {s["world"] for s in states} == {2}  # world size 2 through the c10d rendezvous
    assert [str(v.version) for v in client.search_model_versions("name='nodes-bert'")] == ["1"]
    assert 1 < nodes.data.metrics["perplexity"] < 1000
    watched = two_nodes["watched"]
    assert "node 0 | " in watched and "node 1 | " in watched, watched[-4000:]
    assert watched.count("step 30/30") == 1  # rank 0's progress lines, once, from whichever node holds rank 0
    name = nodes.data.tags["prefect.flow_run_name"]
    assert sorted(r.state.type.value for r in flow_runs(stack, f"{name}-node-")) == ["COMPLETED", "COMPLETED"]
    TIMINGS["seconds_per_step_2_nodes_x_1"] = round(seconds_per_step(client, train), 4)
    TIMINGS["seconds_per_step_1_node_x_2"] = round(seconds_per_step(client, train_one), 4)


def node_training_process(run_dir: Path, node: int) -> psutil.Process | None:
    """Node `node`'s training process (the engine under that node's torchrun agent) of the run in `run_dir`."""
    spec = str(run_dir / "spec.json")
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if spec in cmd and "lmcore" in cmd and "torch.distributed.run" not in cmd:
            try:
                if f"node-{node}-ranks" in " ".join(p.parent().cmdline()):
                    return p
            except psutil.Error:
                continue
    return None


def new_run_dir(stack, before: set, with_file: str, deadline: float) -> Path:
    while time.time() < deadline:
        for d in set(stack["models"].iterdir()) - before:
            if (d / with_file).exists():
                return d
        time.sleep(0.05)
    raise AssertionError(f"no new run with {with_file} in {stack['models']}")


def test_a_killed_node_process_is_restarted_and_ends_with_the_uninterrupted_weights(stack, corpus, two_nodes):
    before = set(stack["models"].iterdir())
    proc = deployment_run(stack, {"corpus": corpus, "args": ARGS, "nnodes": 2, "nproc_per_node": 1,
                                  "max_restarts": 1, "rdzv_timeout": 120, "register_as": "restart-bert"})
    run_dir = new_run_dir(stack, before, "checkpoint-10", time.time() + 300)
    victim = node_training_process(run_dir, 1)
    assert victim is not None
    victim.kill()
    watched = finish(proc, "restart")
    client = mlflow_client(stack)
    parent = parent_of(client, "restart-bert")
    assert parent.info.status == "FINISHED"
    # torchrun restarted the node's processes inside the one attempt: Prefect did not have to retry the stage.
    assert [r.info.status for r in child_runs(client, parent.info.run_id)["pretrain"]] == ["FINISHED"]
    assert "will restart worker group" in (run_dir / "nodes" / "node-1.log").read_text()
    assert "Resuming at step" in watched, watched[-4000:]
    got, want = load_file(run_dir / "model.safetensors"), load_file(two_nodes["out"] / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def node_worker(agent: psutil.Process) -> psutil.Process:
    """The Prefect worker that started the node job this torchrun agent belongs to."""
    for p in agent.parents():
        cmd = p.cmdline()
        if "worker" in cmd and "start" in cmd and "nodes" in cmd:
            return p
    raise AssertionError(f"no worker above {agent.cmdline()}")


def test_a_node_gone_for_good_fails_the_run_naming_it_and_leaves_nothing_running(stack, corpus):
    """Kill node 1's worker with everything it started (its machine is gone) once training is under way: node 0
    loses its peer, the stage fails the attempt naming node 1, and the retry, with one worker left for two nodes,
    fails after the rendezvous timeout naming the node that never started. Not retried again."""
    from tasks.nodes import CANCEL_GRACE_S

    before = set(stack["models"].iterdir())
    proc = deployment_run(stack, {"corpus": corpus, "args": ARGS, "nnodes": 2, "nproc_per_node": 1,
                                  "max_restarts": 1, "rdzv_timeout": RDZV_TIMEOUT, "register_as": "lost-bert"})
    run_dir = new_run_dir(stack, before, "checkpoint-10", time.time() + 300)
    victim = node_training_process(run_dir, 1)
    assert victim is not None
    agent = victim.parent()
    worker = node_worker(agent)
    machine = [worker, *worker.children(recursive=True)]
    for p in machine:
        p.kill()
    killed = time.time()
    watched = finish(proc, "node-gone", ok=False)
    TIMINGS["node_gone_kill_to_failure_s"] = round(time.time() - killed, 1)

    client = mlflow_client(stack)
    parent = parent_of(client, "lost-bert")
    assert parent.info.status == "FAILED" and "never started" in parent.data.tags["error"], parent.data.tags
    attempts = sorted(child_runs(client, parent.info.run_id)["pretrain"], key=lambda r: r.info.start_time)
    assert [r.info.status for r in attempts] == ["FAILED", "FAILED"]
    first, retry = (r.data.tags["error"] for r in attempts)
    assert "node 1 is gone" in first, first
    assert "never started" in retry and "rdzv_timeout=30" in retry, retry
    # Each attempt ends within the rendezvous timeout (from the kill, from its start) plus the time to stop the
    # other node (CANCEL_GRACE_S for one whose worker is gone) and some slack for a loaded machine.
    bound = RDZV_TIMEOUT + CANCEL_GRACE_S + 30
    assert attempts[0].info.end_time / 1000 - killed < bound
    assert (attempts[1].info.end_time - attempts[1].info.start_time) / 1000 < bound
    assert "never started" in watched
    exp = client.get_experiment_by_name("pretrain")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    name = parent.data.tags["prefect.flow_run_name"]
    runs = flow_runs(stack)
    assert not [r.name for r in runs if r.state.type.value in ("RUNNING", "PENDING", "CANCELLING")]
    nodes = {r.state.name for r in runs if r.name.startswith(f"{name}-node-")}
    assert nodes <= {"Failed", "Crashed", "Cancelled"} and "Crashed" in nodes, nodes


def test_the_image_entry_point_trains_on_two_nodes_outside_prefect(tmp_path):
    """`scripts/entrypoint node ...` (the Docker image's entry point) started twice, as on two machines: the first
    publishes the rendezvous, both train together with world size 2."""
    from lmcore.spec import RunSpec

    corpus = write_lines(tmp_path / "corpus.txt", (SAMPLE / "train.txt").read_text().splitlines()[:800])
    run = tmp_path / "run"
    spec = RunSpec(model_type="bert", train_files=[str(corpus)], output_dir=str(run), result_file=str(run / "r.json"),
                   args={**ARGS, "max_steps": 6, "save_steps": -1, "logging_steps": 3, "overwrite_output_dir": True,
                         "cache_dir": str(tmp_path / "cache")})
    run.mkdir()
    spec.save(run / "spec.json")
    env = {**os.environ, **QUIET_ENV, "PIPELINE_NODE_ADDRESS": "127.0.0.1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    nodes = [subprocess.Popen([str(ROOT / "scripts" / "entrypoint"), "node", "--spec", str(run / "spec.json"),
                               "--nnodes", "2", "--index", str(i), "--rdzv-id", "by-hand", "--rdzv-timeout", "120"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert all(f"node {i} on " in out and f"node {i}: finished" in out for i, out in enumerate(outs))
    assert json.loads((run / "r.json").read_text())["global_step"] == 6
    logs = [(run / "nodes" / f"node-{i}.log").read_text() for i in range(2)]
    assert sum("(its store runs here)" in log for log in logs) == 1
    assert all("global_world_sizes=[2]" in log for log in logs), logs[0][-3000:]
