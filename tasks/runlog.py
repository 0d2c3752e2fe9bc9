"""What a failed run says on screen: its error once, in plain words, and no traceback.

Prefect logs a failing task's exception with its traceback, then the flow's (the same exception, raised again)
with a longer one, then "Finished in state Failed(<the message again>)" for both and "Engine execution exited
with unexpected exception" with a third traceback: 120-370 lines under `prefect deployment run --watch` (and in
the UI) around a one-line message. `QuietFailures` sits on the handler that sends run logs to the Prefect API:
the first record of a failure becomes "<stage> failed: <message>" (the message's own lines, not its repr), the
repeats are dropped, and every traceback goes to the run's log file `PIPELINE_HOME/logs/<flow run id>.log`
instead (the MLflow runs get it too, as error.txt: tasks.tracking.end_run). Routine lines the state events
already say (pull steps, the worker's submission, "Beginning flow run") are dropped from the run log as well.

Installed in every process that imports the pipeline's stages (tasks.common calls `install`), so it covers
deployment runs, `python -m flows.*` and tests alike; and from the start of a process by the logging
configuration scripts/up writes for its worker (`python -m tasks.runlog FILE`: Prefect's own configuration with the
filter on its two API handlers), whose flow-run processes inherit it, so the lines logged before the flow's
code is imported (pull steps) and the worker's own are filtered too.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from pathlib import Path

_FAILED = re.compile(r"^(Task run failed with \w+|Encountered exception during execution): ")
_REPEATS = (re.compile(r"^Engine execution exited with unexpected exception"),
            re.compile(r"^Engine execution interrupted by base exception"))
_ROUTINE = re.compile(r"^(Running \d+ deployment pull step|Executing deployment step: |Deployment step '.*' "
                      r"completed successfully|All deployment steps completed successfully|Worker '.*' submitting "
                      r"flow run|Flow run '.*' submitted to infrastructure|Beginning flow run '.*' for flow)")
"""Lines every run logs that the state events (Submitting, Running) already say; they stay in the process's own
log (the worker's log file), not in the run log."""
_FINISHED_FAILED = re.compile(r"^Finished in state (Failed|Crashed)\(")
BAD_INPUT = ("ArgsError", "CorpusError", "BadRunInput", "NodesNotStarted", "ModelNotFoundError",
             "ParameterTypeError", "SignatureMismatchError")
"""Errors whose message is the whole story (bad input or settings): no pointer to a traceback on screen."""


def run_log_file(flow_run_id) -> Path:
    from .paths import pipeline_home

    return pipeline_home() / "logs" / f"{flow_run_id}.log"


class QuietFailures(logging.Filter):
    """A filter for Prefect's API log handler (see the module docstring). It changes only failure records and
    successful pull-step lines; everything else passes untouched."""

    def __init__(self):
        super().__init__()
        self.shown: set[str] = set()  # the failure messages already on screen, per flow run

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _ROUTINE.match(message):
            return False
        if any(p.match(message) for p in _REPEATS):
            self._keep_traceback(record)
            return False
        if _FINISHED_FAILED.match(message):
            # The failure was just shown; the task's line repeats it, the flow's says the run is over.
            return record.name == "prefect.flow_runs" and self._short(record, "Finished in state Failed")
        if record.exc_info and record.exc_info[1] is not None and _FAILED.match(message):
            error = record.exc_info[1]
            where = self._keep_traceback(record)
            text = str(error).strip() or type(error).__name__
            key = f"{getattr(record, 'flow_run_id', '')}:{text}"
            if key in self.shown:
                return False
            self.shown.add(key)
            stage = (getattr(record, "task_run_name", None) or getattr(record, "flow_name", None)
                     or getattr(record, "flow_run_name", None) or "run")
            stage = re.sub(r"-[0-9a-f]{3}$", "", str(stage))  # prepare_corpus-5ae: the task's run name
            pointer = "" if type(error).__name__ in BAD_INPUT or not where else f"\n(traceback: {where})"
            kind = "" if type(error).__name__ in BAD_INPUT else f"{type(error).__name__}: "
            record.msg, record.args = "%s failed: %s%s%s", (stage, kind, text, pointer)
            record.levelno, record.levelname = logging.ERROR, "ERROR"
        elif record.exc_info:
            self._keep_traceback(record)
        return True

    @staticmethod
    def _short(record: logging.LogRecord, text: str) -> bool:
        record.msg, record.args = text, ()
        return True

    @staticmethod
    def _keep_traceback(record: logging.LogRecord) -> str | None:
        """Append the record's traceback to its flow run's log file; take it off the record. Returns the file."""
        exc_info = record.exc_info
        record.exc_info, record.exc_text = None, None
        if not exc_info or exc_info[1] is None:
            return None
        try:
            where = run_log_file(getattr(record, "flow_run_id", None) or os.getpid())
            where.parent.mkdir(parents=True, exist_ok=True)
            with open(where, "a", encoding="utf-8") as f:
                f.write(f"--- {record.getMessage()[:200]}\n{''.join(traceback.format_exception(*exc_info))}\n")
            return str(where)
        except OSError:
            return None


_FILTER = QuietFailures()


def install() -> None:
    """Put the filter on the handlers that send run logs to the Prefect API (idempotent)."""
    from prefect.logging.handlers import APILogHandler

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, APILogHandler) and not any(isinstance(f, QuietFailures) for f in handler.filters):
                handler.addFilter(_FILTER)


def write_logging_config(path: str) -> None:
    """Prefect's default logging configuration (of the installed version) with QuietFailures on the handlers that
    send run and worker logs to the API; for PREFECT_LOGGING_SETTINGS_PATH. Reads the file without importing
    prefect (scripts/up runs this on every start)."""
    import importlib.util

    import yaml

    origin = Path(importlib.util.find_spec("prefect").origin).parent / "logging" / "logging.yml"
    config = yaml.safe_load(origin.read_text())
    config.setdefault("filters", {})["quiet_failures"] = {"()": "tasks.runlog.QuietFailures"}
    for handler in ("api", "worker_api"):
        config["handlers"][handler].setdefault("filters", []).append("quiet_failures")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"# Written by `python -m tasks.runlog` from {origin}\n" + yaml.safe_dump(config))


if __name__ == "__main__":
    import sys

    write_logging_config(sys.argv[1])
