"""Loading by name: a local directory, or a Hugging Face hub name resolved through the hub (or its local cache).

This is the one place that reaches the hub. Online users get the real download path; offline (no network, or
HF_HUB_OFFLINE=1) a name that is not in the local cache fails with an error that says so and what to pass instead.
"""

from __future__ import annotations

import contextlib
import logging
import os


class ModelNotFoundError(OSError):
    """A model or tokenizer name that is neither a local directory nor loadable from the hub or its cache."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _no_load_report():
    """transformers 5 prints, at each load, a "Loading weights" bar, a table of every unexpected and missing weight
    and (once a process group exists) "layers were not sharded": warnings about nothing wrong. The front doors say
    in one line what a load means (an LM head left out, a classification head initialised), and a downstream stage
    loads a model per seed and learning rate: 18 copies of the same news. Errors still raise."""
    from transformers.utils import logging as hf_logging

    library = logging.getLogger("transformers")
    level, bars = library.level, hf_logging.is_progress_bar_enabled()
    library.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        library.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def from_pretrained(cls, name: str, what: str = "model", **kwargs):
    """`cls.from_pretrained(name, **kwargs)` with a clear error when `name` cannot be found."""
    if os.path.isdir(name):
        with _no_load_report():
            return cls.from_pretrained(name, **kwargs)
    if name.startswith((".", "/", "~")) or os.path.exists(name):
        raise ModelNotFoundError(f"{what} {name!r}: no such directory")
    try:
        with _no_load_report():
            return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        where = ("the hub is offline (HF_HUB_OFFLINE=1)" if hub_offline()
                 else "the hub could not be reached or has no such repository")
        raise ModelNotFoundError(
            f"{what} {name!r} is not a local directory and is not in the local Hugging Face cache, and {where}. "
            f"Pass the path of a saved model directory instead (for example the output_dir of an earlier "
            f"train_model run), or download it once where the hub is reachable. ({type(e).__name__}: {e})"
        ) from e
