"""What a flow checks before any work: its parameters, with every problem named at once; the model types the
engine knows (for Prefect's parameter validation); the registered name a run gets when none is given."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from lmcore import ArgsError, CorpusError, LanguageModelingArgs
from lmcore.data import sample_corpus
from lmcore.data.corpus import resolve_files
from lmcore.models.registry import MODEL_TYPES

ModelType = Literal[tuple(MODEL_TYPES)]
"""The engine's model types (lmcore.models.registry): a deployment run with another is refused naming the choices."""

PIPELINE_OWNED = ("output_dir", "tokenizer_name", "cache_dir", "overwrite_output_dir")
"""Settings the pipeline chooses itself (content-addressed folders); a value passed in args is ignored."""

ENGINE_ONLY = ("dataset_class", "no_save", "local_rank")
"""Settings the engine honours but the pipeline cannot: prepare_corpus reads the corpus itself (any container
lmcore reads, with the reading settings of tasks.corpus.READING_ARGS) and hands the engine plain text, the pipeline
must save the model it registers, and it launches the processes itself. Refused with a reason rather than
ignored."""


def check_parameters(corpus=None, args: dict | None = None, nproc_per_node: int = 1, eval_corpus=None,
                     model_name: str | None = None, from_scratch: bool | None = None,
                     starts_from: tuple = (), nodes: dict | None = None, model_type: str | None = None) -> dict:
    """Reject bad parameters with a message naming each one, before anything expensive; returns args without the
    settings the pipeline owns. from_scratch: True refuses a saved model to start from, False requires one
    (`starts_from`: the names of the model parameters that were given), None takes what was given. nodes: the
    multi-node parameters (nnodes, max_restarts, rdzv_endpoint, rdzv_timeout), checked by `node_problems`.
    model_type: a model built from scratch is tried on the meta device first (`shape_problems`)."""
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
                            "the corpus and hands the engine plain text, the pipeline saves and registers the "
                            "model, and launches the processes itself); use the engine directly "
                            "(lmcore.LanguageModelingModel)")
    if not isinstance(nproc_per_node, int) or not 1 <= nproc_per_node <= 64:
        problems.append(f"nproc_per_node={nproc_per_node!r}: must be an integer from 1 to 64")
    problems += node_problems(**(nodes or {}))
    if model_type and not starts_from and not problems:
        problems += shape_problems(model_type, args)
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
    for name, paths in (("corpus", corpus), ("eval_corpus", eval_corpus)):
        if paths is not None:  # CorpusError names every bad source
            try:
                resolve_files(paths, args.get("encoding"), args.get("dataset_cache_dir"))
            except CorpusError as e:
                raise CorpusError(f"parameter {name}: {in_pipeline_terms(str(e))}") from e
    return {k: v for k, v in args.items() if k not in PIPELINE_OWNED}


_SETTING = re.compile(r"\b(set|pass) (\w+)\b")


def in_pipeline_terms(message: str) -> str:
    """An engine message said where a pipeline user puts the setting: "set text_column to ..." -> "set
    args.text_column to ..." (in a deployment run: --params '{"args": {"text_column": ...}}')."""
    fields = set(LanguageModelingArgs.__dataclass_fields__)
    return _SETTING.sub(lambda m: f"{m[1]} args.{m[2]}" if m[2] in fields else m[0], message)


def shape_problems(model_type: str, args: dict) -> list[str]:
    """What transformers refuses in a from-scratch model's config (hidden_size 65 with 2 heads, say), found by
    building the model on the meta device (no memory, no weights: well under a second) before any work, instead of
    in the engine after the corpus and tokenizer stages."""
    import torch
    import transformers as hf

    from lmcore.models.registry import get_model_type

    spec = get_model_type(model_type)
    vocab = {"vocab_size": args["vocab_size"]} if args.get("vocab_size") else {}
    if spec.family == "electra":
        disc = {**vocab, **(args.get("discriminator_config") or {})}
        gen = args.get("generator_config") or None
        built = [("args.discriminator_config", hf.ElectraForPreTraining, disc)] + (
            [("args.generator_config", hf.ElectraForMaskedLM, {**vocab, **gen})] if gen else [])
    else:
        try:
            cls = spec.model_cls(args.get("mlm", True))
        except ValueError as e:
            return [f"args.mlm: {e}"]
        built = [("args.config", cls, {**vocab, **(args.get("config") or {})})]
    problems = []
    for where, cls, fields in built:
        try:
            config = spec.config_cls()
            for k, v in fields.items():
                setattr(config, k, v)
            with torch.device("meta"):
                cls(config)
        except (ValueError, TypeError, AttributeError) as e:
            problems.append(f"{where}: {model_type} refuses this model: {e}")
    return problems


def parse_nnodes(nnodes) -> tuple[int, int]:
    """torchrun's --nnodes as (minimum, maximum): 2 or "2" -> (2, 2), an elastic "1:4" -> (1, 4)."""
    low, sep, high = str(nnodes).strip().partition(":")
    try:
        if isinstance(nnodes, bool):
            raise ValueError
        least, most = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"nnodes={nnodes!r}: a node count (2) or an elastic range MIN:MAX (2:4)") from None
    if not 1 <= least <= most <= 1024:
        raise ValueError(f"nnodes={nnodes!r}: needs 1 <= MIN <= MAX <= 1024")
    return least, most


def node_problems(nnodes=1, max_restarts: int = 0, rdzv_endpoint: str | None = None,
                  rdzv_timeout: int = 600) -> list[str]:
    """What is wrong with the multi-node parameters, one message per parameter."""
    problems = []
    try:
        parse_nnodes(nnodes)
    except ValueError as e:
        problems.append(str(e))
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or not 0 <= max_restarts <= 100:
        problems.append(f"max_restarts={max_restarts!r}: must be an integer from 0 to 100")
    if isinstance(rdzv_timeout, bool) or not isinstance(rdzv_timeout, int) or rdzv_timeout < 1:
        problems.append(f"rdzv_timeout={rdzv_timeout!r}: must be a whole number of seconds, at least 1")
    if rdzv_endpoint:
        host, sep, port = str(rdzv_endpoint).rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            problems.append(f"rdzv_endpoint={rdzv_endpoint!r}: must be HOST:PORT (e.g. node0.cluster:29400), or "
                            "left out to let the first node publish its address")
    return problems


_GENERIC = {"train", "training", "corpus", "data", "text", "texts", "all", "input", "incoming", "docs"}


def corpus_name(corpus) -> str:
    """A short name for a corpus, from its path: a file's stem (its folder's name when the stem says nothing, like
    data/mine/train.txt), a folder's name; several paths: the first one's. The sample corpus: sample-data."""
    first = corpus if isinstance(corpus, (str, os.PathLike)) else list(corpus)[0]
    if sample_corpus.is_sample(first):
        return sample_corpus.NAME
    first = Path(first).expanduser().resolve()
    stem = first.name
    for suffix in (".gz", ".txt", ".text", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".feather"):
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"\[[^\]]*\]$", "", stem)  # a dataset's split: my_corpus[test]
    if first.is_file() and stem.lower() in _GENERIC and first.parent.name:
        stem = first.parent.name
    return stem


def default_model_name(corpus, model_type: str) -> str:
    """The registered name of a run that names none: `<corpus name>-<model type>` (data/mine.txt -> mine-bert), so
    a model trained on one corpus never becomes a version of another corpus's model."""
    name = re.sub(r"[^a-z0-9]+", "-", f"{corpus_name(corpus)}-{model_type}".lower()).strip("-")
    return name or f"corpus-{model_type}"


PROMOTE_ON = "perplexity"
"""The finetune flow's default promote_on; else a downstream metric downstream.<task>.<accuracy|f1|mcc>."""


def check_downstream(downstream, seeds: int = 3, learning_rates=None, promote_on: str = PROMOTE_ON) -> list:
    """The `downstream` parameter (None, a path, a list of paths or mappings {"path", settings...}; the name
    `rotten_tomatoes` for the bundled default task) checked before any work: every labelled file is read, its
    columns found, its labels and splits checked (lmcore.downstream.load_task names the file and column of each
    problem). Returns the entries as the downstream task takes them; problems of every parameter at once."""
    from lmcore.downstream import LabelledDataError, TaskSpec, load_task

    from .labelled import resolve_entry

    problems, entries, names = [], [], []
    if downstream is not None and not isinstance(downstream, (str, dict, list, tuple)):
        problems.append(f"downstream={downstream!r}: a labelled file or folder, a list of them, or mappings "
                        "{\"path\": ..., \"label_column\": ...}")
        downstream = None
    raw = [] if downstream is None else [downstream] if isinstance(downstream, (str, dict)) else list(downstream)
    for entry in raw:
        try:
            entry = resolve_entry(entry)
            task = load_task(TaskSpec.from_entry(entry))
        except (LabelledDataError, FileNotFoundError) as e:
            problems.append(f"downstream: {e}")
            continue
        if task.name in names:
            problems.append(f"downstream: two tasks named {task.name!r}; give one a `name`")
        names.append(task.name)
        entries.append(entry if isinstance(entry, dict) else {"path": str(entry)})
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
        problems.append(f"downstream_seeds={seeds!r}: must be an integer from 1 to 100")
    if learning_rates is not None:
        rates = learning_rates if isinstance(learning_rates, (list, tuple)) else [learning_rates]
        if not rates or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < 1
                                for r in rates):
            problems.append(f"downstream_learning_rates={learning_rates!r}: a list of learning rates, each "
                            "between 0 and 1")
    if promote_on != PROMOTE_ON:
        metric = re.fullmatch(r"downstream\.(.+)\.(accuracy|f1|mcc)", str(promote_on))
        if not metric:
            problems.append(f"promote_on={promote_on!r}: {PROMOTE_ON!r} or downstream.<task>.<accuracy|f1|mcc>")
        elif metric.group(1) not in names:
            problems.append(f"promote_on={promote_on!r}: task {metric.group(1)!r} is not in downstream "
                            f"({', '.join(names) or 'none given'})")
    if problems:
        raise ArgsError("invalid parameters:\n  " + "\n  ".join(problems))
    return entries
