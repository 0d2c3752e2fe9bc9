"""What a flow checks before any work: its parameters, with every problem named at once; the model types the
engine knows (for Prefect's parameter validation); the registered name a run gets when none is given."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from lmcore import ArgsError, LanguageModelingArgs
from lmcore.corpus import resolve_files
from lmcore.registry import MODEL_TYPES

ModelType = Literal[tuple(MODEL_TYPES)]
"""The engine's model types (lmcore.registry): a deployment run with another is refused naming the choices."""

PIPELINE_OWNED = ("output_dir", "tokenizer_name", "cache_dir", "overwrite_output_dir")
"""Settings the pipeline chooses itself (content-addressed folders); a value passed in args is ignored."""

ENGINE_ONLY = ("encoding", "use_hf_datasets", "dataset_class", "no_save", "local_rank")
"""Settings the engine honours but the pipeline cannot: prepare_corpus reads UTF-8 text files and writes the
prepared corpus the engine then reads, the pipeline must save the model it registers, and it launches the
processes itself. Refused with a reason rather than ignored."""


def check_parameters(corpus=None, args: dict | None = None, nproc_per_node: int = 1, eval_corpus=None,
                     model_name: str | None = None, from_scratch: bool | None = None,
                     starts_from: tuple = ()) -> dict:
    """Reject bad parameters with a message naming each one, before anything expensive; returns args without the
    settings the pipeline owns. from_scratch: True refuses a saved model to start from, False requires one
    (`starts_from`: the names of the model parameters that were given), None takes what was given."""
    problems = []
    if not isinstance(args, dict):
        raise ArgsError(f"args: must be a dict of LanguageModelingArgs fields, not {type(args).__name__}")
    try:
        problems += LanguageModelingArgs.from_any(args).problems()
    except ArgsError as e:
        problems.append(f"args: {e}")
    for name in ENGINE_ONLY:
        if name in args and args[name] not in (None, False, -1):
            problems.append(f"args.{name}={args[name]!r}: not available in the pipeline (prepare_corpus reads "
                            "UTF-8 text files, the pipeline saves and registers the model, and launches the "
                            "processes itself); use the engine directly (lmcore.LanguageModelingModel)")
    if not isinstance(nproc_per_node, int) or not 1 <= nproc_per_node <= 64:
        problems.append(f"nproc_per_node={nproc_per_node!r}: must be an integer from 1 to 64")
    if model_name and not os.path.isdir(model_name) and model_name.startswith((".", "/", "~")):
        problems.append(f"model_name={model_name!r}: no such directory")
    if from_scratch is False and not starts_from:
        problems.append("model_name: this run continues training a saved model (from_scratch=false); pass "
                        "--param model_name='\"<folder>\"' (or use pretrain/from-scratch)")
    if from_scratch is True and starts_from:
        problems.append(f"{', '.join(starts_from)}: this run trains from scratch (from_scratch=true); leave "
                        f"{' and '.join(starts_from)} out (or use pretrain/fine-tune)")
    if problems:
        raise ArgsError("invalid parameters:\n  " + "\n  ".join(problems))
    for paths in (corpus, eval_corpus):
        if paths is not None:
            resolve_files(paths)  # CorpusError names every bad file
    return {k: v for k, v in args.items() if k not in PIPELINE_OWNED}


_GENERIC = {"train", "training", "corpus", "data", "text", "texts", "all", "input", "incoming", "docs"}


def corpus_name(corpus) -> str:
    """A short name for a corpus, from its path: a file's stem (its folder's name when the stem says nothing, like
    sample_data/train.txt), a folder's name; several paths: the first one's."""
    first = Path(corpus if isinstance(corpus, (str, os.PathLike)) else list(corpus)[0]).expanduser().resolve()
    stem = first.name
    for suffix in (".gz", ".txt", ".text", ".jsonl", ".json", ".csv", ".tsv"):
        stem = stem.removesuffix(suffix)
    if first.is_file() and stem.lower() in _GENERIC and first.parent.name:
        stem = first.parent.name
    return stem


def default_model_name(corpus, model_type: str) -> str:
    """The registered name of a run that names none: `<corpus name>-<model type>` (data/mine.txt -> mine-bert), so
    a model trained on one corpus never becomes a version of another corpus's model."""
    name = re.sub(r"[^a-z0-9]+", "-", f"{corpus_name(corpus)}-{model_type}".lower()).strip("-")
    return name or f"corpus-{model_type}"
