"""What every stage shares: where pipeline outputs live, the run logger, content-keyed Prefect caching."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def pipeline_home() -> Path:
    """Prepared corpora, tokenizers and trained models: PIPELINE_HOME, else <repo>/runs (git-ignored)."""
    return Path(os.environ.get("PIPELINE_HOME") or REPO / "runs").resolve()


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


def content_cache(key_and_output: Callable[[dict], tuple[str, Path]], complete: str) -> Callable:
    """A Prefect `cache_key_fn`: the key is the content hash of a task's inputs plus the task's own source (so a
    code change recomputes), and the cached output must still be there: a cache hit hands back a path, and a path
    that no longer exists (or lacks its `complete` marker) would be worse than recomputing."""

    def cache_key(context, parameters: dict) -> str:
        try:
            key, output = key_and_output(parameters)
        except Exception:  # bad input: let the task body run and raise its clear error
            return f"{context.task.name}-invalid-{uuid.uuid4().hex}"
        source = inspect.getsource(context.task.fn)
        base = f"{context.task.name}-{digest(key, str(output), source)[:32]}"
        if (output / complete).exists():
            return base
        return f"{base}-rebuild-{uuid.uuid4().hex}"  # never matches: the task body runs and rebuilds the output

    return cache_key
