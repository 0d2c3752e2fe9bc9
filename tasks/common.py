"""What every stage shares: where pipeline outputs live, the run logger, content-keyed Prefect caching."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import uuid
from pathlib import Path
from typing import Callable

from .paths import REPO, pipeline_home  # noqa: F401 (where every stage finds them)


def logger():
    """The Prefect run logger inside a flow or task run (its lines show in the UI), else a plain logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("pipeline")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def content_cache(key_and_output: Callable[[dict], tuple[str, Path]]) -> Callable:
    """A Prefect `cache_key_fn`: the content hash of a task's inputs, where its output goes, and the task's own
    source (a code change recomputes). A cache hit hands back a path without looking at it: callers check that it
    still exists with `cached_call`."""

    def cache_key(context, parameters: dict) -> str:
        try:
            key, output = key_and_output(parameters)
        except Exception:  # bad input: let the task body run and raise its clear error
            return f"{context.task.name}-invalid-{uuid.uuid4().hex}"
        return f"{context.task.name}-{digest(key, str(output), inspect.getsource(context.task.fn))[:32]}"

    return cache_key


def cached_call(task, refresh: bool, still_there: Callable[[object], bool], **kwargs):
    """Run `task`, from Prefect's cache unless `refresh`; returns (result, served from the cache). A cached result
    whose output is gone (`still_there` says so) is recomputed rather than handed back."""
    state = task.with_options(refresh_cache=refresh or None)(**kwargs, return_state=True)
    result, cached = state.result(), state.name == "Cached"
    if cached and not still_there(result):
        logger().info("%s: the cached output is gone, computing it again", task.name)
        state = task.with_options(refresh_cache=True)(**kwargs, return_state=True)
        result, cached = state.result(), False
    return result, cached


def _quiet_failures() -> None:
    """A failed run's error once on screen, its tracebacks in its log file (tasks/runlog.py)."""
    from .runlog import install

    install()


_quiet_failures()
