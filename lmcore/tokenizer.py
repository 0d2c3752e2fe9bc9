"""Train or load a tokenizer. Always a fast (Rust) tokenizer of the model type's own class.

A trained tokenizer starts from an empty instance of the model type's tokenizer class and is trained with
`train_new_from_iterator`, so the normalizer and pre-tokenizer it trains with are exactly the ones it later encodes
with (a cased WordPiece vocabulary is never fed lower-cased text, and the reverse). Trained tokenizers are cached
under `cache_dir/tokenizers/<key>/`, keyed by the corpus content and every setting that shapes the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import transformers as hf

from . import atomic
from .args import LanguageModelingArgs
from .corpus import CorpusStats, content_hash, iter_corpus
from .registry import ModelType

log = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 30000
_ROLE_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def train_tokenizer(spec: ModelType, files: list[Path], args: LanguageModelingArgs, max_length: int):
    """Train a tokenizer of `spec`'s kind on `files` (or reuse the cached one for the same corpus and settings)."""
    vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
    settings = {"type": spec.name, "vocab": vocab_size, "min_freq": args.min_frequency,
                "lower": args.do_lower_case, "special": args.special_tokens, "v": 1}
    key = hashlib.sha256((content_hash(files) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:24]
    target = Path(args.cache_dir) / "tokenizers" / key
    if (target / "tokenizer_config.json").exists():
        log.info("Tokenizer: reusing %s (same corpus and settings)", target)
        return load_tokenizer(str(target))

    base = spec.tokenizer_cls(**_constructor_kwargs(spec, args))
    extra = [t for t in (args.special_tokens or []) if t not in _role_token_values(base)]
    train_kwargs = {"vocab_size": vocab_size, "new_special_tokens": extra or None}
    if spec.tokenizer_kind != "unigram":  # the unigram trainer has no frequency cut-off
        train_kwargs["min_frequency"] = args.min_frequency
    start = time.time()
    stats = CorpusStats()
    log.info("Tokenizer: training a %s %s vocabulary of up to %d tokens on %d file(s)",
             spec.name, spec.tokenizer_kind, vocab_size, len(files))
    tok = base.train_new_from_iterator(_batches(iter_corpus(files, args.strict_utf8, stats)), **train_kwargs)
    tok.model_max_length = max_length
    log.info("Tokenizer: %d tokens from %d lines in %.1fs", len(tok), stats.lines, time.time() - start)
    # Another rank or process may finish the same tokenizer first: theirs is identical, keep it.
    atomic.replace_folder(target, lambda tmp: tok.save_pretrained(str(tmp)), keep_existing=True)
    return load_tokenizer(str(target))


def _constructor_kwargs(spec: ModelType, args: LanguageModelingArgs) -> dict:
    kw: dict = {}
    if spec.tokenizer_kind == "wordpiece":
        kw["do_lower_case"] = args.do_lower_case
    if spec.name == "gpt2":
        # GPT-2 has no padding token; batches of unequal lines need one (it is never a training target).
        kw["pad_token"] = "<|endoftext|>"
    return kw


def _role_token_values(tok) -> set:
    return {str(getattr(tok, name)) for name in _ROLE_TOKENS if getattr(tok, name, None) is not None}


def _batches(lines, size: int = 1000):
    batch = []
    for line in lines:
        if line.strip():
            batch.append(line)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def load_tokenizer(name_or_dir: str):
    """A fast tokenizer from a directory (or a hub name that is in the local cache)."""
    from .hub import from_pretrained

    tok = from_pretrained(hf.AutoTokenizer, name_or_dir, what="tokenizer")
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_dir}: only fast (tokenizers-backed) tokenizers are supported")
    return tok


def padding_id(tokenizer) -> int:
    """The id used to pad batches: the tokenizer's pad token, else its end-of-text token, else 0.
    Padded positions are masked out of attention and never scored, so any id works."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if tid is not None:
            return int(tid)
    return 0


def fingerprint(tokenizer) -> str:
    """Identity of a tokenizer for feature caching: its full serialized pipeline and vocabulary."""
    blob = tokenizer.backend_tokenizer.to_str() + json.dumps(sorted(tokenizer.all_special_tokens))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
