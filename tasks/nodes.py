"""Training on several machines (nnodes > 1), on the machinery built for it: torchrun's c10d rendezvous gathers the
nodes and hands out the ranks, its elastic agent restarts a node's processes after a crash (`max_restarts`), and
Prefect puts one node job on each machine: the pretrain stage submits one run of the `node` deployment per node to a
work pool whose workers (one per machine, `--limit 1`) start them.

Every node job runs the same command, `torchrun --nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
--rdzv-id <flow run>-<attempt> -m lmcore train --spec <output>/spec.json`. What they share is the run's output folder
under PIPELINE_HOME, which every machine must reach: the spec, checkpoints, the final model, `rendezvous-<id>.json`
(where the rendezvous store listens: written by the node job that starts first when no endpoint is given) and each
node's output (`nodes/node-<i>.log`), which the stage streams into the flow run's log as `node i | ...` (not
`[node i]`: `prefect deployment run --watch` prints log lines as Rich markup, where that is a tag and vanishes).

The stage fails when a node job fails (with that node's error; the others are cancelled) or when a node job has not
started within the rendezvous timeout (naming it). A retry of the stage submits every node again, and the engine
resumes from the newest complete checkpoint in the shared output folder.

    python -m tasks.nodes --spec RUN/spec.json --nnodes 2 --index 0 --rdzv-id my-run    # one node, outside Prefect
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import NoReturn

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.spec import RunSpec

from . import tracking
from .common import logger
from .inputs import parse_nnodes
from .launch import (BAD_INPUT, NODE_DEPLOYMENT, BadRunInput, EngineFailed, NodesNotStarted, engine_env, loggable,
                     run_engine)

NODES_DIR = "nodes"
CANCEL_GRACE_S = 30.0
"""How long a cancelled node job may take to stop (its worker sends SIGTERM, torchrun stops its processes) before
the stage marks it Crashed: a worker that is gone never reports that its run stopped."""
POLL_S = 1.0
_EXIT_CODE = re.compile(r"exit code (-?\d+)")
_NOT_TAKEN = {"SCHEDULED", "PAUSED"}
"""Flow-run state types of a node job no worker has taken yet."""
_NOT_STARTED = _NOT_TAKEN | {"PENDING"}
"""... or one a worker took whose process, container or pod has not come up."""


def node_log(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / NODES_DIR / f"node-{index}.log"


def rendezvous_file(run_dir: Path, rdzv_id: str) -> Path:
    """Where the first node of rendezvous `rdzv_id` publishes its address: one file per rendezvous, so a file left
    by an earlier attempt or run in the same folder is never read for this one."""
    return Path(run_dir) / f"rendezvous-{re.sub(r'[^A-Za-z0-9_.-]', '_', rdzv_id)}.json"


# ---- one node job, on its machine -----------------------------------------------------------------------------

@task(name="torchrun", cache_policy=NO_CACHE)
def train_node(spec: str, index: int, nnodes: str, rdzv_id: str, nproc_per_node: int = 1, max_restarts: int = 0,
               rdzv_endpoint: str | None = None, rdzv_timeout: int = 600, mlflow_run_id: str | None = None,
               mlflow_tracking_uri: str | None = None) -> dict:
    """One node's part: find the rendezvous, run torchrun, copy every output line into nodes/node-<index>.log.
    Raises what run_engine raises (BadRunInput: bad input, which the stage does not retry)."""
    spec_file = Path(spec)
    if not spec_file.is_file():
        raise BadRunInput(f"node {index} on {socket.gethostname()}: the run spec {spec} is not there: PIPELINE_HOME "
                          "must be a folder every node reaches (a shared filesystem mounted at the same path)",
                          BAD_INPUT)
    run_dir = spec_file.parent
    log_file = node_log(run_dir, index)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    what = f"training {RunSpec.load(spec_file).model_type} (node {index})"
    with open(log_file, "a", encoding="utf-8") as out:
        def say(line: str) -> None:
            logger().info("%s", line)
            out.write(line + "\n")
            out.flush()

        address = node_address()
        endpoint, is_host = rendezvous(run_dir, rdzv_id, rdzv_endpoint, rdzv_timeout, address)
        command = node_command(spec_file, index, nnodes, nproc_per_node, max_restarts, endpoint, rdzv_id,
                               rdzv_timeout, is_host, address)
        say(f"node {index} on {socket.gethostname()} ({address}): rendezvous {rdzv_id} at {endpoint}"
            f"{' (its store runs here)' if is_host else ''}")
        say(" ".join(command))
        try:
            run_engine(command, node_env(nproc_per_node, mlflow_run_id, mlflow_tracking_uri), what, copy_to=out)
        except EngineFailed as e:
            say(f"{type(e).__name__}: {e}")
            raise
        say(f"node {index}: finished")
    return {"index": index, "endpoint": endpoint}


def rendezvous(run_dir: Path, rdzv_id: str, given: str | None, timeout: float,
               address: str | None = None) -> tuple[str, bool | None]:
    """HOST:PORT of the c10d rendezvous store, and whether this node hosts it (None: torchrun decides by matching
    its hostname, for a given endpoint). With none given the first node job here publishes its own `address` and a
    free port in rendezvous-<id>.json, created exclusively (O_EXCL, also on NFS) so exactly one node does; the
    others read it."""
    if given:
        return given, None
    path = rendezvous_file(run_dir, rdzv_id)
    mine = {"rdzv_id": rdzv_id, "host": address or node_address(), "port": free_port(),
            "hostname": socket.gethostname()}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return _published_endpoint(path, rdzv_id, timeout), False
    with os.fdopen(fd, "w") as f:
        json.dump(mine, f)
        f.flush()
        os.fsync(f.fileno())
    return f"{mine['host']}:{mine['port']}", True


def _published_endpoint(path: Path, rdzv_id: str, timeout: float) -> str:
    """The endpoint another node job published (it may still be writing the file)."""
    deadline = time.time() + timeout
    while True:
        try:
            theirs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            theirs = None
        if isinstance(theirs, dict) and theirs.get("rdzv_id") == rdzv_id:
            return f"{theirs['host']}:{theirs['port']}"
        if time.time() > deadline:
            raise EngineFailed(f"{path}: no rendezvous address for {rdzv_id} after {timeout} s (found {theirs})", 1)
        time.sleep(0.2)


def node_address() -> str:
    """Where the other nodes reach this one: PIPELINE_NODE_ADDRESS when set, else this machine's address on its
    route to the Prefect API (every node reaches that server, while a container's or pod's hostname often resolves
    nowhere else), else its hostname."""
    given = os.environ.get("PIPELINE_NODE_ADDRESS")
    if given:
        return given
    from urllib.parse import urlparse

    from prefect.settings import PREFECT_API_URL

    api = urlparse(PREFECT_API_URL.value() or "")
    if api.hostname:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((api.hostname, api.port or 443))  # UDP: nothing is sent, the kernel only picks the route
                return s.getsockname()[0]
        except OSError:
            pass
    return socket.gethostname()


def free_port() -> int:
    """A port free now; the store binds it a moment later (should another process take it meanwhile, the attempt
    fails and a retry draws another)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_command(spec_file: Path, index: int, nnodes: str, nproc_per_node: int, max_restarts: int, endpoint: str,
                 rdzv_id: str, rdzv_timeout: int, is_host: bool | None = None,
                 address: str | None = None) -> list[str]:
    """The torchrun command of one node: c10d rendezvous at `endpoint` waiting up to `rdzv_timeout` s for the
    other nodes, only local rank 0 on the console, every rank's output under nodes/node-<index>-ranks/. `address`
    is where the others reach this node when it gets rank 0 (torchrun's default, the fully qualified hostname, is
    `localhost` on many containers and VMs)."""
    conf = f"join_timeout={rdzv_timeout}" + ("" if is_host is None else f",is_host={int(is_host)}")
    ranks = Path(spec_file).parent / NODES_DIR / f"node-{index}-ranks"
    local = [f"--local-addr={address}"] if address else []
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}", f"--rdzv-conf={conf}",
            *local, f"--max-restarts={max_restarts}", f"--log-dir={ranks}", "--tee=3", "--local-ranks-filter=0",
            "-m", "lmcore", "train", "--spec", str(spec_file)]


def node_env(nproc_per_node: int, mlflow_run_id: str | None, tracking_uri: str | None) -> dict:
    """engine_env on this node (its cores shared by its processes), with the MLflow run the stage handed over:
    only global rank 0 attaches to it and logs."""
    env = engine_env(nproc_per_node, None)
    env.setdefault("LOGLEVEL", "INFO")  # torchrun's agent then says which ranks this node got, and its restarts
    # After an elastic restart the processes would share the rendezvous store of the first round, where the old
    # processes' addresses remain, and may connect to a dead one ("Connection refused": pytorch/pytorch#135712);
    # a store of their own per round, hosted by rank 0, avoids that.
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    if mlflow_run_id:
        env.update(MLFLOW_RUN_ID=mlflow_run_id, MLFLOW_TRACKING_URI=tracking_uri or tracking.tracking_uri())
    return env


# ---- the pretrain stage's side: submit, follow, fail ----------------------------------------------------------

def train_on_nodes(spec_file: Path, nnodes, nproc_per_node: int, max_restarts: int, rdzv_endpoint: str | None,
                   rdzv_timeout: int, mlflow_run_id: str | None, what: str,
                   deployment: str = NODE_DEPLOYMENT) -> None:
    """Run the engine on `nnodes` machines: one run of `deployment` per node, followed until all have completed.
    Raises BadRunInput (a node's bad input), NodesNotStarted (a node job no worker took) or EngineFailed."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run, task_run

    least, most = parse_nnodes(nnodes)
    run_dir = Path(spec_file).parent
    for old in run_dir.glob("rendezvous-*.json"):  # earlier attempts', like their node logs
        old.unlink(missing_ok=True)
    shutil.rmtree(run_dir / NODES_DIR, ignore_errors=True)
    rdzv_id = f"{flow_run.id or uuid.uuid4().hex}-{max(1, task_run.run_count or 1)}"
    params = {"spec": str(spec_file), "nnodes": str(nnodes), "nproc_per_node": nproc_per_node,
              "max_restarts": max_restarts, "rdzv_id": rdzv_id, "rdzv_endpoint": rdzv_endpoint or None,
              "rdzv_timeout": rdzv_timeout, "mlflow_run_id": mlflow_run_id,
              "mlflow_tracking_uri": tracking.tracking_uri() if mlflow_run_id else None}
    log = logger()
    log.info("pretrain: %s node jobs of %s, %d process(es) each, rendezvous %s at %s", nnodes, deployment,
             nproc_per_node, rdzv_id, rdzv_endpoint or f"the address the first node writes to "
             f"{rendezvous_file(run_dir, rdzv_id)}")
    runs = []
    nodes = None
    try:
        for i in range(most):
            runs.append(run_deployment(deployment, parameters={**params, "index": i}, timeout=0,
                                       flow_run_name=f"{flow_run.name or 'pretrain'}-node-{i}"))
        nodes = _Nodes(runs, run_dir)
        nodes.follow(least, rdzv_timeout, what)
    except ObjectNotFound:
        raise NodesNotStarted(f"{what}: no deployment {deployment!r}: deploy it (scripts/up, or prefect deploy "
                              "--all) and start workers on its work pool", 1) from None
    except BaseException:
        # A node job outliving its stage (a failure, a cancellation, Ctrl-C) would hold its machine for nothing.
        (nodes or _Nodes(runs, run_dir)).abandon()
        raise


class _Nodes:
    """The node jobs of one attempt, followed together: their flow runs' states and their log files."""

    def __init__(self, runs: list, run_dir: Path):
        self.runs = dict(enumerate(runs))
        self.active = set(self.runs)
        self.tails = {i: _Tail(node_log(run_dir, i)) for i in self.runs}
        self.log = logger()

    def follow(self, least: int, rdzv_timeout: float, what: str) -> None:
        deadline = time.time() + rdzv_timeout
        while True:
            self.stream()
            self.refresh()
            failed = [i for i in self.active if self.state(i).is_final() and not self.state(i).is_completed()]
            if failed:
                self.fail(what, failed=failed)
            if all(self.state(i).is_completed() for i in self.active):
                self.stream()
                return
            waiting = [i for i in self.active if self.state(i).type.value in _NOT_STARTED]
            if waiting and time.time() > deadline:
                if len(self.active) - len(waiting) < least:
                    self.fail(what, never_started=waiting, timeout=rdzv_timeout)
                # Elastic (nnodes MIN:MAX) with at least MIN nodes started: go on without the others.
                self.log.warning("nodes %s did not start within %d s: training goes on with %d nodes", waiting,
                                 rdzv_timeout, len(self.active) - len(waiting))
                self.cancel(waiting)
                self.active -= set(waiting)
            time.sleep(POLL_S)

    def state(self, i: int):
        return self.runs[i].state

    def stream(self, final: bool = False) -> None:
        for i, tail in self.tails.items():
            for line in tail.lines(final):
                self.log.info("node %d | %s", i, loggable(line))

    def refresh(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        index = {run.id: i for i, run in self.runs.items()}
        if not index:
            return
        with get_client(sync_client=True) as client:
            fresh = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(index))))
        for run in fresh:
            i = index[run.id]
            if run.state and (self.runs[i].state is None or run.state.type != self.runs[i].state.type):
                self.log.info("node %d: %s (flow run %s)", i, run.state.name, run.name)
            self.runs[i] = run

    def cancel(self, indices) -> None:
        """Cancel node jobs: one no worker took yet at once, a started one through its worker (which stops it)."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled, Cancelling

        with get_client(sync_client=True) as client:
            for i in indices:
                state = self.state(i)
                if state is None or not state.is_final():
                    new = Cancelled if state is None or state.type.value in _NOT_TAKEN else Cancelling
                    client.set_flow_run_state(self.runs[i].id, new(message="the pretrain stage stopped it"))

    def abandon(self) -> None:
        """Cancel whatever is not finished, without waiting (the stage is going away)."""
        try:
            self.refresh()
            self.cancel([i for i in self.runs if not self.state(i).is_final()])
        except Exception as e:  # noqa: BLE001 - the original error is the one to report
            self.log.warning("could not cancel the node jobs: %s", e)

    def fail(self, what: str, failed=(), never_started=(), timeout: float = 0.0) -> NoReturn:
        """Stop the other node jobs, then raise one error naming every node that failed, never started, or did not
        stop when cancelled (its worker or machine is gone: it is marked Crashed)."""
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        parts = [self.not_started(i, timeout) for i in never_started]  # while their states still say how far
        others = [i for i in self.active if i not in failed and not self.state(i).is_final()]
        self.cancel(others)
        end = time.time() + CANCEL_GRACE_S
        while time.time() < end and not all(self.state(i).is_final() for i in others):
            time.sleep(POLL_S)
            self.stream()
            self.refresh()
        gone = [i for i in others if not self.state(i).is_final() and i not in never_started]
        with get_client(sync_client=True) as client:
            for i in gone:
                client.set_flow_run_state(self.runs[i].id, Crashed(
                    message="did not stop when cancelled: its worker or machine is gone"), force=True)
        self.stream(final=True)
        parts += [f"node {i} is gone: it stopped answering (flow run {self.runs[i].name!r} marked Crashed; its "
                  f"last output {self.tails[i].silent_for():.0f} s ago)" for i in gone]
        failed = sorted(failed, key=lambda i: self.state(i).timestamp)
        reasons = {i: _reason(self.state(i)) for i in failed}
        parts += [f"node {i} failed: {reasons[i]}" for i in failed]
        codes = [int(c) for r in reasons.values() for c in _EXIT_CODE.findall(r)]
        error = (BadRunInput if any("BadRunInput" in r for r in reasons.values())
                 else NodesNotStarted if never_started else EngineFailed)
        raise error(loggable(f"{what} on {len(self.runs)} nodes failed: " + "; ".join(parts)), codes[0] if codes else 1)

    def not_started(self, i: int, timeout: float) -> str:
        run, pool = self.runs[i], self.runs[i].work_pool_name
        if run.state.type.value == "PENDING":
            return (f"node {i} never started: a worker of work pool {pool!r} took flow run {run.name!r} but its "
                    f"process, container or pod did not come up within rdzv_timeout={timeout:g} s")
        return (f"node {i} never started: no worker of work pool {pool!r} took flow run {run.name!r} within "
                f"rdzv_timeout={timeout:g} s (is a worker running on that machine? prefect worker start --pool "
                f"{pool} --limit 1)")


def _reason(state) -> str:
    message = (state.message or state.name or "").replace("Flow run encountered an exception: ", "")
    return message[:2000]


class _Tail:
    """The new complete lines of a file that another machine appends to."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""
        self.changed = time.time()

    def lines(self, final: bool = False) -> list[str]:
        """Lines appended since the last call; `final`: with a last line that has no newline (a node killed
        mid-line)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            self.offset += len(data)
            self.changed = time.time()
        *complete, self.partial = (self.partial + data).split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        return [line.decode("utf-8", "replace").rstrip("\r") for line in complete]

    def silent_for(self) -> float:
        return time.time() - self.changed


def main(argv=None) -> None:
    """`python -m tasks.nodes`: one node of a training on several machines, outside Prefect (the Docker image's
    `node` command): the same torchrun command a node job runs. Start it on every machine with the same --spec
    (on shared storage) and --rdzv-id."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tasks.nodes", description=main.__doc__)
    p.add_argument("--spec", required=True, help="the run spec (lmcore.spec.RunSpec) in the shared output folder")
    p.add_argument("--index", type=int, required=True, help="this node's number, for its log file (0, 1, ...)")
    p.add_argument("--nnodes", default="2", help="a node count, or an elastic MIN:MAX")
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--max-restarts", type=int, default=0)
    p.add_argument("--rdzv-id", required=True, help="the same on every node of one training")
    p.add_argument("--rdzv-endpoint", help="HOST:PORT (default: the first node publishes its own)")
    p.add_argument("--rdzv-timeout", type=int, default=600)
    ns = p.parse_args(argv)
    try:
        parse_nnodes(ns.nnodes)
        train_node.fn(spec=ns.spec, index=ns.index, nnodes=ns.nnodes, rdzv_id=ns.rdzv_id,
                      nproc_per_node=ns.nproc_per_node, max_restarts=ns.max_restarts,
                      rdzv_endpoint=ns.rdzv_endpoint, rdzv_timeout=ns.rdzv_timeout,
                      mlflow_run_id=os.environ.get("MLFLOW_RUN_ID"),
                      mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
    except ValueError as e:  # a bad --nnodes
        p.error(str(e))
    except EngineFailed as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code or 1)


if __name__ == "__main__":
    import logging

    # Outside a run the lines go to the logger "pipeline" (tasks.common.logger); prefect's import has already
    # configured the root logger, so say where they go.
    console = logging.getLogger("pipeline")
    console.addHandler(logging.StreamHandler(sys.stdout))
    console.setLevel(logging.INFO)
    console.propagate = False
    main()
