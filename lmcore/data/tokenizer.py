"""Train or load a tokenizer. Always a fast (Rust) tokenizer of the model type's own class.

A trained tokenizer starts from an empty instance of the model type's tokenizer class and is trained with
`train_new_from_iterator`, so the normalizer and pre-tokenizer it trains with are exactly the ones it later encodes
with (a cased WordPiece vocabulary is never fed lower-cased text, and the reverse). Trained tokenizers are cached
under `cache_dir/tokenizers/<key>/`, keyed by the corpus content and every setting that shapes the vocabulary.

A WordPiece tokenizer (bert, distilbert, electra) trains with the BERT normalizer the Simple Transformers settings
describe (`clean_text`, `strip_accents`, `handle_chinese_chars`, `do_lower_case`), and `save_tokenizer` makes sure
it loads back with that same normalizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import transformers as hf
from tokenizers import Tokenizer, normalizers

from ..base import atomic
from ..models.args import LanguageModelingArgs
from .containers import batched
from .corpus import CorpusReading, CorpusStats, content_hash
from ..models.registry import ModelType

log = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 30000
# Files some tokenizer class may write; ones the new tokenizer lacks are removed from an output_dir it is saved into.
_TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model",
                    "tokenizer.model"}
_ROLE_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def train_tokenizer(spec: ModelType, files: list[Path], args: LanguageModelingArgs, max_length: int):
    """Train a tokenizer of `spec`'s kind on `files` (or reuse the cached one for the same corpus and settings)."""
    vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
    settings = {"type": spec.name, "vocab": vocab_size, "min_freq": args.min_frequency,
                "lower": args.do_lower_case, "special": args.special_tokens,
                # byte-level BPE trains as it always did: its cached tokenizers stay valid
                "v": TRAINING_VERSION if spec.tokenizer_kind in ("wordpiece", "bpe") else
                UNIGRAM_VERSION if spec.tokenizer_kind == "unigram" else 1}
    if spec.tokenizer_kind == "wordpiece":  # only WordPiece has these knobs: other kinds keep their cache keys
        settings.update(clean=args.clean_text, accents=args.strip_accents, cjk=args.handle_chinese_chars)
    data_format = args.data_format if args.use_hf_datasets else None
    if args.encoding or data_format:  # how the files are read changes what is learned
        settings.update(encoding=args.encoding, format=data_format)
    reading = CorpusReading.from_args(args)
    settings.update(reading.key(files))  # so do the containers, and which column, split or configuration is read
    key = hashlib.sha256((content_hash(files) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:24]
    target = Path(args.cache_dir) / "tokenizers" / key
    if (target / "tokenizer_config.json").exists():
        log.info("Tokenizer: reusing %s (same corpus and settings)", target)
        return load_tokenizer(str(target))

    base = spec.tokenizer_cls(**_constructor_kwargs(spec, args))
    if spec.tokenizer_kind == "wordpiece":
        # The class builds this normalizer from its arguments too, except clean_text, which it always turns on.
        base.backend_tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=args.clean_text, handle_chinese_chars=args.handle_chinese_chars,
            strip_accents=args.strip_accents, lowercase=args.do_lower_case)
    extra = [t for t in (args.special_tokens or []) if t not in _role_token_values(base)]
    # The trainer's own progress bar prints only blank lines when output is not a terminal (a worker's log).
    train_kwargs = {"vocab_size": vocab_size, "new_special_tokens": extra or None, "show_progress": False}
    if spec.tokenizer_kind != "unigram":  # the unigram trainer has no frequency cut-off
        train_kwargs["min_frequency"] = args.min_frequency
    start = time.time()
    log.info("Tokenizer: training a %s %s vocabulary of up to %d tokens on %d file(s)",
             spec.name, spec.tokenizer_kind, vocab_size, len(files))
    passes: list[CorpusStats] = []

    def texts():
        passes.append(CorpusStats())
        return reading.texts(files, passes[-1])

    tok = train_repeatably(base, texts, train_kwargs)
    stats = passes[-1]
    tok.model_max_length = max_length
    log.info("Tokenizer: %d tokens from %d lines in %.1fs", len(tok), stats.lines, time.time() - start)
    # Another rank or process may finish the same tokenizer first: theirs is identical, keep it.
    atomic.replace_folder(target, lambda tmp: save_tokenizer(tok, tmp), keep_existing=True)
    return load_tokenizer(str(target))


TRAINING_VERSION = 2
"""Bumped when the same text and settings would train another vocabulary (2: derived tokens numbered in order)."""
UNIGRAM_VERSION = 2
"""The same for unigram tokenizers (2: pieces numbered in sorted order)."""


def train_repeatably(base, texts, train_kwargs: dict):
    """`base.train_new_from_iterator(...)`, giving the same vocabulary and ids every time on the same text.

    `texts()` yields the corpus's texts afresh on each call.

    Why: the trainer numbers the single characters it starts from in sorted order, but numbers the tokens it derives
    from them (WordPiece's "##e", a suffixed BPE's "e</w>") in the order it walks its table of words, which differs
    from one process to the next; merges of equal count are taken in id order, so two trainings of one text gave
    different ids and, near the vocabulary limit, different tokens. Byte-level BPE derives no tokens and is stable.
    A first pass with no merges (vocab_size=1) lists the derived tokens; the real pass receives them, sorted, as
    reserved tokens, which the trainer numbers before anything else; they are ordinary vocabulary entries again in
    the tokenizer returned. Costs one more read of the corpus for the kinds that derive tokens."""
    if not _derives_tokens(base):
        return _pieces_in_order(base.train_new_from_iterator(_batches(texts()), **train_kwargs))
    extra = list(train_kwargs.get("new_special_tokens") or [])
    probe = base.train_new_from_iterator(_batches(texts()), **{**train_kwargs, "vocab_size": 1})
    reserved = {str(t) for t in probe.backend_tokenizer.get_added_tokens_decoder().values()}
    derived = sorted(t for t in probe.backend_tokenizer.get_vocab(with_added_tokens=False)
                     if len(t) > 1 and t not in reserved)
    reserve = {**train_kwargs, "new_special_tokens": extra + derived}
    tok = base.train_new_from_iterator(_batches(texts()), **reserve)
    state = json.loads(tok.backend_tokenizer.to_str())
    drop = set(derived)
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in drop]
    kwargs = {k: v for k, v in tok.init_kwargs.items() if k != "extra_special_tokens"}
    kwargs["tokenizer_object"] = Tokenizer.from_str(json.dumps(state))
    if extra:
        kwargs["extra_special_tokens"] = extra
    return type(tok)(**kwargs)


def _pieces_in_order(tok):
    """A unigram tokenizer with its pieces numbered in sorted order after the special tokens (other kinds are
    returned as they are). The unigram trainer numbers pieces by score, and its scores are not bit-reproducible
    (its seed pieces come out of a hash table, so EM sums them in another order each time: measured up to 1e-4
    apart on the same text), so near-equal pieces swapped ids from one training to the next. The same pieces are
    learned every time; sorted, they get the same ids. Scores are kept (the Viterbi segmentation uses them, not
    the ids)."""
    state = json.loads(tok.backend_tokenizer.to_str())
    model = state["model"]
    if model["type"] != "Unigram":
        return tok
    special = {t["content"] for t in state["added_tokens"]}
    vocab = model["vocab"]
    lead = next((i for i, (piece, _) in enumerate(vocab) if piece not in special), len(vocab))
    if any(piece in special for piece, _ in vocab[lead:]):  # special tokens not all first: leave it as trained
        return tok
    ordered = vocab[:lead] + sorted(vocab[lead:], key=lambda entry: entry[0])
    new_id = {piece: i for i, (piece, _) in enumerate(ordered)}
    if model.get("unk_id") is not None:
        model["unk_id"] = new_id[vocab[model["unk_id"]][0]]
    model["vocab"] = ordered
    for token in state["added_tokens"]:
        token["id"] = new_id.get(token["content"], token["id"])
    kwargs = {k: v for k, v in tok.init_kwargs.items() if k != "tokenizer_object"}
    kwargs["tokenizer_object"] = Tokenizer.from_str(json.dumps(state))
    return type(tok)(**kwargs)


def _derives_tokens(tok) -> bool:
    """Whether training `tok`'s model makes tokens from single characters plus a marker (see train_repeatably)."""
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    return model["type"] == "WordPiece" or (model["type"] == "BPE" and bool(
        model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")))


def train_tokenizer_into(spec: ModelType, files: list[Path], args: LanguageModelingArgs, max_length: int,
                         output_dir: str | Path):
    """Simple Transformers' `train_tokenizer`: train (or reuse the cached) tokenizer and save it into
    `output_dir`, returning it loaded from there. Files already in `output_dir` stay, except tokenizer files
    the new tokenizer does not have (a stale `merges.txt` or `special_tokens_map.json` from an earlier tokenizer
    of another kind could otherwise be read on load)."""
    cached = Path(train_tokenizer(spec, files, args, max_length).name_or_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_into(out, lambda tmp: shutil.copytree(cached, tmp))
    fresh = {f.name for f in cached.iterdir()}
    for name in _TOKENIZER_FILES - fresh:
        (out / name).unlink(missing_ok=True)
    log.info("Tokenizer: saved into %s", out)
    return load_tokenizer(str(out))


def save_tokenizer(tok, folder: str | Path) -> None:
    """`save_pretrained`, checked: the saved tokenizer must load back with the normalizer and pre-tokenizer it
    has now. BERT-family classes rebuild theirs from init arguments on load and cannot express every setting
    (clean_text=False is lost); such a folder names the generic backend class instead, which loads
    tokenizer.json exactly as written."""
    folder = Path(folder)
    tok.save_pretrained(str(folder))
    want = _text_pipeline(tok)
    if _text_pipeline(hf.AutoTokenizer.from_pretrained(str(folder))) == want:
        return
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    # The generic class would otherwise fall back to its own default input names (DistilBERT has no token types).
    config.update(tokenizer_class="TokenizersBackend", model_input_names=list(tok.model_input_names))
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    got = _text_pipeline(hf.AutoTokenizer.from_pretrained(str(folder)))
    if got != want:
        raise RuntimeError(f"tokenizer saved in {folder} reloads with a different normalizer or pre-tokenizer: "
                           f"{got} instead of {want}")


def _text_pipeline(tok) -> dict:
    backend = json.loads(tok.backend_tokenizer.to_str())
    return {"normalizer": backend.get("normalizer"), "pre_tokenizer": backend.get("pre_tokenizer")}


def add_special_tokens_list(tokenizer, tokens) -> int:
    """Add Simple Transformers' `special_tokens_list` as extra special tokens: never split, listed in
    `all_special_ids` (so never masked). Returns how many new ids the vocabulary gained: the model's embeddings
    must grow by that much (a token already in the vocabulary only becomes special, keeping its id)."""
    have = set(tokenizer.all_special_tokens)
    new = [str(t) for t in dict.fromkeys(tokens or []) if str(t) not in have]
    if not new:
        return 0
    before = len(tokenizer)
    tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    return len(tokenizer) - before


def _constructor_kwargs(spec: ModelType, args: LanguageModelingArgs) -> dict:
    kw: dict = {}
    if spec.tokenizer_kind == "wordpiece":
        # Saved in tokenizer_config.json: the class rebuilds its normalizer from these on load.
        kw.update(do_lower_case=args.do_lower_case, strip_accents=args.strip_accents,
                  tokenize_chinese_chars=args.handle_chinese_chars)
    if spec.name == "gpt2":
        # GPT-2 has no padding token; batches of unequal lines need one (it is never a training target).
        kw["pad_token"] = "<|endoftext|>"
    return kw


def _role_token_values(tok) -> set:
    return {str(getattr(tok, name)) for name in _ROLE_TOKENS if getattr(tok, name, None) is not None}


def _batches(lines):
    """The non-blank texts in lists, as the trainer takes them."""
    return batched(line for line in lines if line.strip())


def load_tokenizer(name_or_dir: str):
    """A fast tokenizer from a directory (or a hub name that is in the local cache)."""
    from ..models.hub import from_pretrained

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
