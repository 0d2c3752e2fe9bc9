"""Launching the engine (`python -m lmcore <command> --spec FILE`) as a subprocess, on one process or under torchrun,
with its output streamed into the Prefect run log line by line (progress lines included, so they reach the UI and a
terminal watching the run); shared by the stages that run it here (pretrain, evaluate) and by tasks/nodes.py, which
runs it on other machines.

The engine's exit code says what went wrong: 2 is bad input, bad settings or a non-finite loss (retrying cannot
help), and so is a crash on a ValueError (a setting a library refused); anything else is a crash that may be
transient (a killed process, a lost peer) and is retried; a retry resumes from the newest complete checkpoint in
the same output folder.

Under torchrun every process writes its output to a file (`<output>/ranks/`) and only rank 0's is streamed, so a
line appears once however many processes run; when the run fails, the other ranks' error lines join the message.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from lmcore.base.host import threads_per_process

from . import tracking
from .common import REPO, logger

BAD_INPUT = 2
NODE_DEPLOYMENT = "node/torchrun"
"""The deployment (prefect.yaml) that runs one node's part of a training on several machines."""
_CHILD_EXIT = re.compile(r"exitcode\s*:\s*(-?\d+)")
_RANK_PREFIX = re.compile(r"^\[default\d+\]:")
_REFUSED_SETTING = re.compile(r"^(?:[\w.]+\.)?ValueError: ")
"""The last line of a traceback that ended on a ValueError: a library refused a setting, a retry cannot help."""
_MARKUP_TAG = re.compile(r"\[(?=[a-z#/@])")
ENGINE_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""The engine's log format under the pipeline (LMCORE_LOG_FORMAT): no timestamp, the run log has one."""
_ENGINE_LINE = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
"""An engine log line: its level first (after a timestamp, from an engine that sets its own format)."""


def relog(log, line: str) -> None:
    """One engine output line into the run log, once, at its own level, with the run log's timestamp only (a
    timestamp the engine put in front is dropped; INFO is implied)."""
    m = _ENGINE_LINE.match(line)
    if m is None:
        log.info("%s", loggable(line))
    else:  # "WARNING lmcore.model: ..." keeps its level word: a watching terminal shows no levels
        log.log(getattr(logging, m[1]), "%s", loggable(line[m.end():] if m[1] == "INFO" else line[m.start(1):]))


def loggable(text: str) -> str:
    """`text` for the run log: a zero-width space after each "[" that opens what Rich reads as a markup tag.
    `prefect deployment run --watch` prints log lines (and failure messages) as Rich markup: a gloo error's
    "[/__w/.../pair.cc:553]" crashes it with a MarkupError and "[rank1]:" vanishes; the space shows nowhere."""
    return _MARKUP_TAG.sub("[\u200b", text)


class EngineFailed(RuntimeError):
    """The engine exited with an error that may be transient; the task is retried."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class BadRunInput(EngineFailed):
    """Bad input, bad settings or a non-finite loss: never retried."""


class NodesNotStarted(EngineFailed):
    """A node job that no worker started (or a node deployment that does not exist): a retry would wait for the
    same missing worker, so it is not retried."""


def retry_transient(task, task_run, state) -> bool:
    error = state.result(raise_on_failure=False)
    return not isinstance(error, (BadRunInput, NodesNotStarted))


def engine_command(spec_file: Path, nproc_per_node: int, command: str = "train", max_restarts: int = 0) -> list[str]:
    """`python -m lmcore <command> --spec FILE`, under torchrun when nproc_per_node > 1 (each rank's output in a
    folder `ranks` beside the spec file)."""
    return launch_command(["-m", "lmcore", command, "--spec", str(spec_file)], nproc_per_node,
                          Path(spec_file).parent / "ranks", max_restarts)


def launch_command(program: list[str], nproc_per_node: int, rank_logs: Path, max_restarts: int = 0) -> list[str]:
    """`python <program>` on one process, or under torchrun on `nproc_per_node` with only rank 0 on the console and
    every rank's output in `rank_logs` (and torchrun's elastic agent restarting them up to `max_restarts` times)."""
    if nproc_per_node == 1 and not max_restarts:
        return [sys.executable, *program]
    restarts = [f"--max-restarts={max_restarts}"] if max_restarts else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            *restarts, f"--log-dir={rank_logs}", "--tee=3", "--local-ranks-filter=0", *program]


def engine_env(nproc_per_node: int, run_id: str | None) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    if run_id:
        env.update(MLFLOW_RUN_ID=run_id, MLFLOW_TRACKING_URI=tracking.tracking_uri())
    # Ranks share the cores: more threads than cores per rank makes every rank slower.
    env["OMP_NUM_THREADS"] = str(threads_per_process(nproc_per_node))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # carriage-return bars make unreadable log lines
    env["LMCORE_LOG_FORMAT"] = ENGINE_LOG_FORMAT  # each line gets the run log's timestamp, not a second one
    # The pipeline's own modules (a run spec's on_evaluation hook) import in the engine, whatever the directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_engine(command: list[str], env: dict, what: str, copy_to=None) -> None:
    """Run `command`, streaming each output line into the run log (and into the open text file `copy_to`, when
    given); raise EngineFailed / BadRunInput on failure. An interruption (cancellation, Ctrl-C, SIGTERM) stops the
    whole process group before it propagates."""
    log = logger()
    tail: deque[str] = deque(maxlen=40)
    rank_logs = _rank_logs(command)
    if rank_logs is not None:
        shutil.rmtree(rank_logs, ignore_errors=True)  # an earlier attempt's files
    command = with_parent(command)
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            raise BadRunInput(f"{what}: not started, the flow is stopping", BAD_INPUT)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env, start_new_session=True, errors="replace")
        _LIVE.add(proc)
    try:
        for line in proc.stdout:
            line = _RANK_PREFIX.sub("", line.rstrip("\n"))
            tail.append(line)
            relog(log, line)
            if copy_to is not None:
                copy_to.write(line + "\n")
                copy_to.flush()
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    if code == 0:
        return
    if _STOPPING.is_set():  # stopped by stop_engines: no retry
        raise BadRunInput(f"{what}: stopped, the flow is stopping", code)
    lines = list(tail) + _other_ranks_lines(rank_logs)
    codes = {int(c) for c in _CHILD_EXIT.findall("\n".join(lines))}
    refused = [t for t in lines if _REFUSED_SETTING.match(t.strip())]
    bad = code == BAD_INPUT or BAD_INPUT in codes or bool(refused)
    errors = list(dict.fromkeys(t.strip() for t in lines if t.startswith("error:") or "Error" in t))[-5:]
    message = f"{what} failed (exit code {code}{', ranks ' + str(sorted(codes)) if codes else ''})" + (
        ": " + " | ".join(errors) if errors else "")
    raise (BadRunInput if bad else EngineFailed)(loggable(message), code)


_LIVE: set = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_engines() -> None:
    """Stop every engine this process started and start no more (a sweep interrupted with trials training in
    other threads: only the main thread hears a cancellation or Ctrl-C). Their tasks fail as bad input, so Prefect
    does not retry them."""
    _STOPPING.set()
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        _stop(proc)


_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
                    "os.execv(sys.argv[1], sys.argv[1:])")
"""PR_SET_PDEATHSIG, then the real command (the setting survives exec): SIGTERM when the process that started it
dies."""


def with_parent(command: list[str]) -> list[str]:
    """`command`, made to end when this process dies (Linux). The engine runs in a session of its own, so that an
    interruption stops its whole group; without this, a flow process killed outright (a cancelled deployment run,
    kill -9) would leave it training on, and a resumed sweep would meet it writing into the same output folder.
    (Not preexec_fn: it is unsafe in a process with threads, and flow runs have them.)"""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _DIE_WITH_PARENT, *command]


def _rank_logs(command: list[str]) -> Path | None:
    for arg in command:
        if arg.startswith("--log-dir="):
            return Path(arg.split("=", 1)[1])
    return None


def _other_ranks_lines(rank_logs: Path | None, per_rank: int = 20) -> list[str]:
    """The last lines of every rank but 0 (torchrun keeps them in <log-dir>/<run>/attempt_<n>/<rank>/)."""
    if rank_logs is None or not rank_logs.exists():
        return []
    out = []
    for f in sorted(rank_logs.glob("*/attempt_*/*/std*.log")):
        if f.parent.name != "0":
            out += f.read_text(errors="replace").splitlines()[-per_rank:]
    return out


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
