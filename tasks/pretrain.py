"""pretrain: run the engine (`python -m lmcore train --spec ...`) as a subprocess, under torchrun for more than one
process, with its output streamed into the Prefect run log line by line.

The engine's exit code says what went wrong: 2 is bad input, bad settings or a non-finite loss (retrying cannot
help), anything else is a crash that may be transient (a killed process, a lost peer) and is retried; a retry
resumes from the newest complete checkpoint in the same output folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.corpus import known_file_hashes
from lmcore.spec import RunSpec

from . import tracking
from .common import logger

BAD_INPUT = 2
_CHILD_EXIT = re.compile(r"exitcode\s*:\s*(-?\d+)")


class EngineFailed(RuntimeError):
    """The engine exited with an error that may be transient; the task is retried."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class BadRunInput(EngineFailed):
    """Bad input, bad settings or a non-finite loss: never retried."""


def retry_transient(task, task_run, state) -> bool:
    error = state.result(raise_on_failure=False)
    return not isinstance(error, BadRunInput)


def engine_command(spec_file: Path, nproc_per_node: int) -> list[str]:
    if nproc_per_node > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                "-m", "lmcore", "train", "--spec", str(spec_file)]
    return [sys.executable, "-m", "lmcore", "train", "--spec", str(spec_file)]


def engine_env(nproc_per_node: int, run_id: str | None) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    if run_id:
        env.update(MLFLOW_RUN_ID=run_id, MLFLOW_TRACKING_URI=tracking.tracking_uri())
    # Ranks share the cores: more threads than cores per rank makes every rank slower.
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, nproc_per_node)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # carriage-return bars make unreadable log lines
    return env


def run_engine(command: list[str], env: dict, what: str) -> None:
    """Run `command`, streaming each output line into the run log; raise EngineFailed / BadRunInput on failure.
    An interruption (cancellation, Ctrl-C, SIGTERM) stops the whole process group before it propagates."""
    log = logger()
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, start_new_session=True, errors="replace")
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("%s", line)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if code == 0:
        return
    codes = {int(c) for c in _CHILD_EXIT.findall("\n".join(tail))}
    bad = code == BAD_INPUT or BAD_INPUT in codes
    errors = [t for t in tail if t.startswith("error:") or "Error" in t][-5:]
    message = f"{what} failed (exit code {code}{', ranks ' + str(sorted(codes)) if codes else ''})" + (
        ": " + " | ".join(errors) if errors else "")
    raise (BadRunInput if bad else EngineFailed)(message, code)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


@task(name="pretrain", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def pretrain(model_type: str, train_file: str, eval_file: str, output_dir: str, args: dict | None = None,
             model_name: str | None = None, tokenizer_dir: str | None = None, generator_name: str | None = None,
             discriminator_name: str | None = None, nproc_per_node: int = 1,
             parent_run_id: str | None = None) -> dict:
    """Train with the engine; returns {"output_dir", "result" (the engine's eval result), "run_id"}."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine_args = {"overwrite_output_dir": True, "resume_from_checkpoint": "latest",
                   "cache_dir": str(out.parent / "engine-cache"), **(args or {})}
    if tokenizer_dir and not model_name:
        engine_args["tokenizer_name"] = tokenizer_dir
    result_file = out / "result.json"
    result_file.unlink(missing_ok=True)
    spec = RunSpec(model_type=model_type, model_name=model_name, train_files=[train_file], eval_files=[eval_file],
                   output_dir=str(out), args=engine_args, generator_name=generator_name,
                   discriminator_name=discriminator_name, result_file=str(result_file),
                   file_hashes=known_file_hashes([Path(train_file), Path(eval_file)]))
    spec_file = out / "spec.json"
    spec.save(spec_file)
    with tracking.child_run(parent_run_id, "pretrain", {"nproc_per_node": nproc_per_node}) as run_id:
        tracking.log_params(run_id, {"model_type": model_type, "model_name": model_name,
                                     "nproc_per_node": nproc_per_node, "args": args or {}})
        logger().info("pretrain: %s", " ".join(engine_command(spec_file, nproc_per_node)))
        run_engine(engine_command(spec_file, nproc_per_node), engine_env(nproc_per_node, run_id),
                   f"training {model_type}")
        result = json.loads(result_file.read_text())
        tracking.log_metrics(run_id, result, step=int(result.get("global_step", 0)))
        if run_id:
            tracking.log_loss_curve(run_id, [run_id, parent_run_id], out)
    return {"output_dir": str(out), "result": result, "run_id": run_id}
