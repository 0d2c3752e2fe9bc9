"""train_tokenizer (training from scratch only): the model type's own tokenizer kind, trained on the train split.

Cached by the prepared corpus's content key and every setting that shapes the vocabulary, in a content-addressed
folder the pretrain stage hands to the engine as `tokenizer_name`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from lmcore import LanguageModelingArgs
from lmcore.base.atomic import replace_folder
from lmcore.models.registry import get_model_type
from lmcore.data.tokenizer import TRAINING_VERSION, UNIGRAM_VERSION
from lmcore.data.tokenizer import train_tokenizer as engine_train

from . import tracking
from .common import content_cache, digest, logger, pipeline_home

SETTINGS = ("vocab_size", "min_frequency", "do_lower_case", "special_tokens", "strict_utf8", "max_seq_length",
            "clean_text", "strip_accents", "handle_chinese_chars")
"""The engine settings that shape a trained vocabulary (the rest of `args` cannot change it)."""


def _key_and_output(parameters: dict) -> tuple[str, Path]:
    args = parameters.get("args") or {}
    settings = {k: args.get(k) for k in SETTINGS}
    version = [TRAINING_VERSION]
    if get_model_type(parameters["model_type"]).tokenizer_kind == "unigram":  # other kinds keep their keys
        version.append(UNIGRAM_VERSION)
    key = digest(parameters["corpus_key"], parameters["model_type"], settings, *version)[:24]
    return key, pipeline_home() / "tokenizers" / key


def tokenizer_ready(folder: str) -> bool:
    return (Path(folder) / "tokenizer_config.json").exists()


@task(name="train_tokenizer", cache_key_fn=content_cache(_key_and_output),
      persist_result=True)
def train_tokenizer(train_file: str, corpus_key: str, model_type: str, args: dict | None = None,
                    parent_run_id: str | None = None) -> str:
    """Returns the folder of the trained tokenizer (loadable with AutoTokenizer)."""
    args = dict(args or {})
    _, out = _key_and_output(dict(corpus_key=corpus_key, model_type=model_type, args=args))
    if (out / "tokenizer_config.json").exists():
        return str(out)
    settings = LanguageModelingArgs.from_any({k: v for k, v in args.items() if k in SETTINGS})
    with tracking.child_run(parent_run_id, "train_tokenizer") as run_id, \
            tempfile.TemporaryDirectory(prefix="tokenizer-") as scratch:
        settings.cache_dir = scratch  # the engine's own cache would keep a second copy
        logger().info("train_tokenizer: %s tokenizer, vocabulary up to %s, on %s", model_type,
                      settings.vocab_size or "the default", train_file)
        tok = engine_train(get_model_type(model_type), [Path(train_file)], settings, settings.max_seq_length)
        replace_folder(out, lambda tmp: tok.save_pretrained(str(tmp)))  # a half-written one is replaced whole
        tracking.log_params(run_id, {"model_type": model_type, "tokenizer.vocabulary": len(tok),
                                     **{f"tokenizer.{k}": getattr(settings, k) for k in SETTINGS}})
        if run_id:
            tracking.client().log_artifacts(run_id, str(out), "tokenizer")
    logger().info("train_tokenizer: %d tokens -> %s", len(tok), out)
    return str(out)
