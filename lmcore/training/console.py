"""What a script that calls the engine shows without configuring logging: the engine's INFO lines (progress with
step, loss, tokens/s and ETA; what was saved where) on stderr, as Simple Transformers users are used to seeing.

The engine speaks through `logging` only. An application that configures logging (a root handler, as
`logging.basicConfig` or Prefect installs) decides for itself; one that configured nothing would see warnings
alone, so the first model it builds attaches one handler to the `lmcore` logger that prints only while the root
logger has no handler. `args.silent=True` keeps training and evaluation to warnings and errors.
"""

from __future__ import annotations

import contextlib
import logging
import sys

_ENGINE = logging.getLogger("lmcore")


class _WhenUnconfigured(logging.StreamHandler):
    """Writes a record only while the application has no root handler of its own (checked at each record, so
    configuring logging later takes over without printing every line twice)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def show_progress() -> None:
    """Called by the front doors when a model is built: make the engine's INFO lines visible in a script that
    configured no logging. Does nothing when the application set a level on the `lmcore` logger or configured
    the root logger."""
    if any(isinstance(h, _WhenUnconfigured) for h in _ENGINE.handlers):
        return
    if logging.getLogger().handlers or _ENGINE.level != logging.NOTSET:
        return
    handler = _WhenUnconfigured(sys.stderr)
    handler.setFormatter(logging.Formatter("lmcore: %(message)s"))
    _ENGINE.addHandler(handler)
    _ENGINE.setLevel(logging.INFO)


@contextlib.contextmanager
def no_library_progress_bars():
    """transformers draws a "Writing model shards" bar for every save: around each checkpoint of a long run that
    buries the engine's own progress lines. Off while the engine saves, back as it was afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
