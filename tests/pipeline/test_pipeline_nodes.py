"""The multi-node path without servers or training: node parameters are checked, the first node job publishes the
rendezvous and the others read it, every node runs the same c10d torchrun command, nnodes=1 keeps the one-machine
command, node logs are followed line by line, the node deployment and its Kubernetes variant fit their work pools'
job templates, and the Docker image's build context holds what the Dockerfile copies. Fast."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from lmcore import ArgsError
from tests.pipeline_support import ROOT, SAMPLE


def test_nnodes_and_the_other_node_parameters_are_checked():
    from tasks.inputs import check_parameters, parse_nnodes

    assert parse_nnodes(1) == (1, 1) and parse_nnodes("2") == (2, 2) and parse_nnodes("1:4") == (1, 4)
    for bad in ("0", "3:2", "two", "", True, "1:x"):
        with pytest.raises(ValueError, match="nnodes="):
            parse_nnodes(bad)
    with pytest.raises(ArgsError) as e:
        check_parameters(str(SAMPLE / "train.txt"), {}, nodes={"nnodes": "4:2", "max_restarts": -1,
                                                               "rdzv_endpoint": "node0", "rdzv_timeout": 0})
    text = str(e.value)
    assert all(name in text for name in ("nnodes='4:2'", "max_restarts=-1", "rdzv_endpoint='node0'",
                                         "rdzv_timeout=0")), text
    assert check_parameters(str(SAMPLE / "train.txt"), {}, nodes={"nnodes": "2:4", "max_restarts": 3,
                                                                   "rdzv_endpoint": "10.0.0.5:29400"}) == {}


def test_the_first_node_publishes_the_rendezvous_and_the_others_read_it(tmp_path, monkeypatch):
    from tasks.nodes import rendezvous, rendezvous_file

    monkeypatch.setenv("PIPELINE_NODE_ADDRESS", "10.1.2.3")
    first, hosts = rendezvous(tmp_path, "run-1", None, timeout=5)
    assert hosts is True and first.startswith("10.1.2.3:")
    published = json.loads(rendezvous_file(tmp_path, "run-1").read_text())
    assert published["rdzv_id"] == "run-1" and f"{published['host']}:{published['port']}" == first
    monkeypatch.setenv("PIPELINE_NODE_ADDRESS", "10.9.9.9")  # another machine: it reads, it does not publish
    assert rendezvous(tmp_path, "run-1", None, timeout=5) == (first, False)
    # A given endpoint is used as is; torchrun decides who hosts the store by its hostname.
    assert rendezvous(tmp_path, "run-1", "node0:29400", timeout=5) == ("node0:29400", None)
    # Another attempt (or a run started again by hand in the same folder) has a file of its own.
    second, hosts = rendezvous(tmp_path, "run-2", None, timeout=5)
    assert hosts is True and second.startswith("10.9.9.9:")
    assert rendezvous_file(tmp_path, "run/../x").parent == tmp_path


def test_without_an_address_given_a_node_is_reached_where_it_reaches_the_prefect_api(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.nodes import node_address

    monkeypatch.delenv("PIPELINE_NODE_ADDRESS", raising=False)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert node_address() == "127.0.0.1"


def test_every_node_runs_the_same_c10d_torchrun_command(tmp_path):
    from tasks.nodes import node_command

    spec = tmp_path / "spec.json"
    host = node_command(spec, 0, "2", 4, 1, "10.0.0.5:29400", "flow-1", 60, is_host=True, address="10.0.0.5")
    other = node_command(spec, 1, "2", 4, 1, "10.0.0.5:29400", "flow-1", 60, is_host=False, address="10.0.0.6")
    assert host[:3] == [sys.executable, "-m", "torch.distributed.run"]
    for arg in ("--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.5:29400",
                "--rdzv-id=flow-1", "--max-restarts=1"):
        assert arg in host and arg in other
    assert "--rdzv-conf=join_timeout=60,is_host=1" in host and "--rdzv-conf=join_timeout=60,is_host=0" in other
    assert host[-5:] == ["-m", "lmcore", "train", "--spec", str(spec)]
    assert f"--log-dir={tmp_path / 'nodes' / 'node-1-ranks'}" in other  # each node's rank logs apart
    assert "--standalone" not in host
    # Where the others reach a node that gets rank 0: its own address, not torchrun's guess (its FQDN).
    assert "--local-addr=10.0.0.5" in host and "--local-addr=10.0.0.6" in other
    # A given endpoint: no is_host, torchrun matches its hostname (and falls back to a client when taken).
    assert "--rdzv-conf=join_timeout=60" in node_command(spec, 0, "1:3", 1, 0, "node0:29400", "x", 60)


def test_one_node_keeps_the_one_machine_commands(tmp_path):
    from tasks.pretrain import engine_command

    spec = tmp_path / "spec.json"
    assert engine_command(spec, 1) == [sys.executable, "-m", "lmcore", "train", "--spec", str(spec)]
    two = engine_command(spec, 2)
    assert two[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert not [a for a in two if a.startswith(("--max-restarts", "--nnodes", "--rdzv"))]
    assert "--max-restarts=2" in engine_command(spec, 2, max_restarts=2)


def test_node_logs_are_followed_line_by_line(tmp_path):
    from tasks.nodes import _Tail

    log = tmp_path / "nodes" / "node-0.log"
    tail = _Tail(log)
    assert tail.lines() == []  # not written yet
    log.parent.mkdir()
    with open(log, "a") as f:
        f.write("one\ntw")
        f.flush()
        assert tail.lines() == ["one"]
        f.write("o\nthree")
        f.flush()
        assert tail.lines() == ["two"]
        assert tail.lines(final=True) == ["three"] and tail.lines(final=True) == []


def test_a_node_job_refuses_a_spec_it_cannot_see_naming_the_shared_folder(tmp_path):
    from prefect.logging import disable_run_logger

    from tasks.nodes import train_node
    from tasks.pretrain import BadRunInput

    with disable_run_logger(), pytest.raises(BadRunInput, match="PIPELINE_HOME must be a folder every node"):
        train_node.fn(spec=str(tmp_path / "elsewhere" / "spec.json"), index=1, nnodes="2", rdzv_id="x")


def test_the_node_flow_takes_what_the_stage_sends():
    """The parameters train_on_nodes sends are exactly the node flow's (a typo would fail every node job)."""
    import inspect

    from flows.node import node

    sent = {"spec", "nnodes", "nproc_per_node", "max_restarts", "rdzv_id", "rdzv_endpoint", "rdzv_timeout",
            "mlflow_run_id", "mlflow_tracking_uri", "index"}
    assert set(inspect.signature(node.fn).parameters) == sent
    source = inspect.getsource(__import__("tasks.nodes", fromlist=["x"]).train_on_nodes)
    assert all(f'"{name}"' in source for name in sent)


def deployments() -> dict:
    return {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}


def test_the_node_deployment_runs_the_node_flow_on_the_node_pool():
    from tasks.pretrain import NODE_DEPLOYMENT

    node = deployments()["torchrun"]
    assert NODE_DEPLOYMENT == "node/torchrun" and node["entrypoint"] == "flows/node.py:node"
    assert node["work_pool"]["name"] == "nodes" and node["work_pool"]["job_variables"]["env"]["HF_HUB_OFFLINE"] == "1"
    up = (ROOT / "scripts" / "up").read_text()
    assert "work-pool create nodes --type process" in up and "--pool nodes --type process --limit 1" in up


def kubernetes_variant() -> dict:
    """The Kubernetes deployment of the node job (prefect-kubernetes.yaml, a Prefect project file of its own)."""
    (deployment,) = yaml.safe_load((ROOT / "prefect-kubernetes.yaml").read_text())["deployments"]
    return deployment


def test_prefect_yaml_carries_no_commented_out_configuration():
    """Comments in prefect.yaml are prose: no line that would start a deployment or one of its sections once
    uncommented (the Kubernetes variant used to sit at the end of the file as such a block)."""
    setting = re.compile(r"^\s*#\s*(- name:|(entrypoint|work_pool|job_variables|parameters|pull|schedules|image|env"
                         r"|namespace|definitions|deployments):)")
    for name in ("prefect.yaml", "prefect-kubernetes.yaml"):
        lines = [line for line in (ROOT / name).read_text().splitlines() if setting.match(line)]
        assert lines == [], (name, lines)
    assert "kubernetes" not in {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}


def test_the_kubernetes_variant_fits_the_kubernetes_work_pool_job_template():
    """Its job variables validate against prefect-kubernetes' default base job template (the schema a Kubernetes
    pool created with `prefect work-pool create --type kubernetes` has), and it runs the same node flow."""
    pytest.importorskip("prefect_kubernetes", reason="prefect-kubernetes is not installed")
    from prefect.utilities.schema_tools import validate
    from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

    variant = kubernetes_variant()
    assert variant["entrypoint"] == deployments()["torchrun"]["entrypoint"]
    assert variant["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/lmcore"
    template = KubernetesWorker.get_default_base_job_template()
    schema = template["variables"]
    values = variant["work_pool"]["job_variables"]
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])
    validate(values, schema, raise_on_error=True, preprocess=True, ignore_required=True)
    # Rendered into the job manifest a Kubernetes worker submits: the image, the environment, the namespace.
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values))
    (container,) = config.job_manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == values["image"] and config.namespace == "training"
    assert config.env["PIPELINE_HOME"] == "/pipeline" and config.env["HF_HUB_OFFLINE"] == "1"


def test_the_image_builds_from_what_the_context_holds():
    """What can be checked without a Docker daemon: every COPY source exists and is not docker-ignored, torch is
    installed pinned before anything else, the base image is a build argument, and the entry point runs the
    command a work pool's worker gives the container (Prefect's `prefect flow-run execute`)."""
    from prefect.workers.base import BaseJobConfiguration

    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert not any(source.rstrip("/") == i or source.startswith(i + "/") for i in ignored), source
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim\nFROM \$\{BASE_IMAGE\}", dockerfile, re.M)
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert "torch==2.13.0" in installs[0] and "-r requirements.txt" in installs[1]
    assert 'ENTRYPOINT ["/opt/lmcore/scripts/entrypoint"]' in dockerfile
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert " ".join(command) == BaseJobConfiguration._base_flow_run_command()
    assert os.access(ROOT / "scripts" / "entrypoint", os.X_OK)


def test_artifacts_of_a_database_server_store_go_to_the_shared_pipeline_home(monkeypatch, tmp_path):
    from tasks import tracking

    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "shared"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://postgres@db:5432/mlflow")
    assert tracking.artifact_root() == tmp_path / "shared" / "mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.artifact_root() == tmp_path / "mlartifacts"


def test_entrypoint_runs_its_arguments_from_the_project_folder(tmp_path):
    import subprocess

    out = subprocess.run([str(ROOT / "scripts" / "entrypoint"), "sh", "-c", "pwd"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0 and Path(out.stdout.strip()) == ROOT
    usage = subprocess.run([str(ROOT / "scripts" / "entrypoint"), "node", "--help"], capture_output=True, text=True,
                           env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert usage.returncode == 0 and "--rdzv-id" in usage.stdout


def test_log_lines_survive_prefects_watch_display():
    """`prefect deployment run --watch` renders log lines as Rich markup: a gloo error line would crash it and a
    "[rank1]:" prefix would vanish. What the pipeline logs renders as the text it was."""
    from rich.markup import render

    from tasks.pretrain import loggable

    gloo = "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed"
    for line in (gloo, "[rank1]: error: bad settings", "[default0]:[W socket]", "plain [1, 2] ['a']"):
        assert render(loggable(line)).plain.replace("\u200b", "") == line
    assert loggable("plain [1, 2] ['a']") == "plain [1, 2] ['a']"


NODE_PARAMETERS = ("nproc_per_node", "nnodes", "max_restarts", "rdzv_endpoint", "rdzv_timeout", "node_deployment")


def test_finetune_takes_the_node_parameters_pretrain_takes_through_the_same_stage():
    import inspect

    import flows.finetune as finetune
    import flows.pretrain as pretrain

    tuned = inspect.signature(finetune.finetune.fn).parameters
    scratch = inspect.signature(pretrain.pretrain.fn).parameters
    assert {n: tuned[n].default for n in NODE_PARAMETERS} == {n: scratch[n].default for n in NODE_PARAMETERS}
    assert finetune.pretrain_task is pretrain.pretrain_task  # one launcher: tasks.pretrain.pretrain


def test_finetune_checks_the_node_parameters_first_and_hands_them_to_training(monkeypatch, tmp_path):
    """Bad ones fail before the champion is fetched; good ones reach the training stage as given. (The stages
    around the training are stubbed: this is about where the parameters go.)"""
    import flows.finetune as finetune
    from tests.pipeline_support import isolate, write_lines

    isolate(monkeypatch, tmp_path)
    incoming = write_lines(tmp_path / "incoming" / "day1.txt", ["a line of new text"] * 5).parent
    monkeypatch.setattr(finetune, "fingerprint_corpus", lambda folder: {"empty": False, "hash": "h1"})
    fetched = []
    monkeypatch.setattr(finetune, "find_champion", lambda name: fetched.append(name) or {
        "last_corpus_hash": None, "version": "1", "holder": name})
    with pytest.raises(ArgsError, match=r"nnodes='two'[\s\S]*rdzv_endpoint='node0'"):
        finetune.finetune.fn(corpus_dir=str(incoming), register_as="x-bert", nnodes="two", rdzv_endpoint="node0")
    assert fetched == []

    class Launched(Exception):
        pass

    def launch(**kwargs):
        raise Launched(kwargs)

    monkeypatch.setattr(finetune, "fetch_champion", lambda champion: {"model_type": "bert", "folder": str(tmp_path)})
    monkeypatch.setattr(finetune, "cached_call", lambda *a, **k: ({"train_file": "t", "eval_file": "e"}, False))
    monkeypatch.setattr(finetune, "describe_corpus", lambda *a, **k: None)
    monkeypatch.setattr(finetune, "evaluate", lambda *a, **k: {"perplexity": 9.0})
    monkeypatch.setattr(finetune, "pretrain_task", launch)
    with pytest.raises(Launched) as got:
        finetune.finetune.fn(corpus_dir=str(incoming), register_as="x-bert", nnodes="2:4", nproc_per_node=3,
                             max_restarts=2, rdzv_endpoint="node0:29400", rdzv_timeout=60,
                             node_deployment="node/kubernetes")
    sent = got.value.args[0]
    assert {n: sent[n] for n in NODE_PARAMETERS} == {"nproc_per_node": 3, "nnodes": "2:4", "max_restarts": 2,
                                                     "rdzv_endpoint": "node0:29400", "rdzv_timeout": 60,
                                                     "node_deployment": "node/kubernetes"}


def test_finetunes_command_line_takes_the_node_options(monkeypatch):
    import contextlib

    import flows.finetune as finetune

    calls = []

    def flow(**kwargs):
        calls.append(kwargs)
        return {}

    flow.description = finetune.finetune.description
    monkeypatch.setattr(finetune, "use_running_server_or_temporary", contextlib.nullcontext)
    monkeypatch.setattr(finetune, "finetune", flow)
    finetune.main(["--corpus-dir", "in", "--register-as", "x-bert", "--nnodes", "2", "--nproc-per-node", "4",
                   "--rdzv-endpoint", "node0:29400"])
    finetune.main(["--corpus-dir", "in", "--register-as", "x-bert", "--nnodes", "1:3", "--rdzv-endpoint", ""])
    assert [(c["nnodes"], c["nproc_per_node"], c["rdzv_endpoint"], c["node_deployment"]) for c in calls] == [
        (2, 4, "node0:29400", "node/torchrun"), ("1:3", 1, None, "node/torchrun")]


@pytest.mark.parametrize("entry_point", ["pretrain", "finetune"])
def test_mlproject_entry_points_take_the_node_parameters_to_their_flow(entry_point, monkeypatch):
    """The command `mlflow run -e <entry point> -P nnodes=2:4 ...` runs is parsed by the flow's own command line,
    and the values arrive at the flow."""
    import contextlib
    import importlib
    import shlex

    from mlflow.projects import _project_spec

    given = {"nnodes": "2:4", "nproc_per_node": "3", "max_restarts": "1", "rdzv_endpoint": "node0:29400"}
    if entry_point == "finetune":
        given.update(corpus_dir="incoming", register_as="x-bert")
    command = _project_spec.load_project(str(ROOT)).get_entry_point(entry_point).compute_command(given, None)
    program, argv = shlex.split(command)[:3], shlex.split(command)[3:]
    assert program == ["python", "-m", f"flows.{entry_point}"]
    module = importlib.import_module(f"flows.{entry_point}")
    calls = []

    def flow(**kwargs):
        calls.append(kwargs)
        return {"metrics": {}}

    flow.description = getattr(module, entry_point).description
    monkeypatch.setattr(module, "use_running_server_or_temporary", contextlib.nullcontext)
    monkeypatch.setattr(module, entry_point, flow)
    module.main(argv)
    (sent,) = calls
    assert (sent["nnodes"], sent["nproc_per_node"], sent["max_restarts"], sent["rdzv_endpoint"]) == (
        "2:4", 3, 1, "node0:29400")
