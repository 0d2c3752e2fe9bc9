"""Corpus -> tokenized examples on disk, memory-mapped, cached by content (the batches drawn from them:
lmcore.data.batches).

On-disk format (one folder per corpus × tokenizer × settings, under `cache_dir/features/<key>/`): `tokens.bin`, all
examples' token ids back to back (uint16 when the vocabulary fits, else int32), `offsets.bin` (int64, n + 1 example
boundaries), with sliding windows `score_from.bin` (int64, per example the leading content tokens an earlier window
already scored), and `meta.json`. Flat files + offsets serve all three dataset types, slice in O(1) with no copy,
and keep memory flat however large the corpus: every source (text, JSON Lines, CSV, Parquet, Arrow, datasets: see
`lmcore.data.corpus`) is checked, then streamed through in ~1 MB chunks of text, tokenized in worker processes when
there are several, and the examples and their offsets are written as they come; nothing is held whole. The folder is
written under a temporary name and renamed, so a half-written cache is never found.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
import torch

from ..base import atomic, host
from .corpus import CorpusReading, CorpusStats, check_sources, content_hash, members, source_texts
from .tokenizer import fingerprint

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENCODE_BATCH_CHARS = 1 << 20
"""Characters of text per call to the Rust tokenizer, and per task of a tokenizing worker process."""


@dataclass
class Features:
    """Tokenized examples: `tokens[offsets[i]:offsets[i+1]]` is example i (special tokens included).

    `score_from` (sliding windows only): per example, how many of its leading content tokens (after the
    `meta["prefix_tokens"]` special tokens) are context an earlier window already scored.
    `labels` (labelled examples, lmcore.data.labelled): per example its class id (int64) or target (float32).
    `second_from` (text pairs): per example, the position where its second segment starts (its length when the
    tokenizer gives both segments one type id), so token_type_ids need no storage of their own."""

    tokens: np.ndarray
    offsets: np.ndarray
    path: Path
    meta: dict
    score_from: np.ndarray | None = None
    labels: np.ndarray | None = None
    second_from: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def window_step(content: int, stride: float | None) -> int:
    """Tokens between window starts: stride × window, at least 1, at most the window (None: back-to-back blocks)."""
    if stride is None:
        return content
    return max(1, min(content, int(content * stride)))


def _cutting_key(reading: CorpusReading, stride: float | None) -> dict:
    """The settings besides the corpus reading's own key that change the features, only where they differ from the
    defaults (so caches built before these settings existed keep their keys)."""
    parts = {"stride": stride, "encoding": reading.encoding, "format": reading.data_format}
    return {k: v for k, v in parts.items() if v is not None}


def features_for(files: list[Path], tokenizer, args, block_size: int, build: bool, mode: str = "train"
                 ) -> Features:
    """The features of `files` under every data setting in `args` (a LanguageModelingArgs): the one entry point
    of the model. `build=False` (non-zero ranks) only opens the cache rank 0 built; `mode` ("train" or "dev") is
    passed on to a user's `dataset_class`."""
    if args.dataset_class is not None:
        return custom_features(args.dataset_class, files, tokenizer, args, block_size, mode)
    return load_features(files, tokenizer, args.dataset_kind, block_size, args.cache_dir,
                         reprocess=args.reprocess_input_data, build=build, reading=CorpusReading.from_args(args),
                         stride=float(args.stride) if args.sliding_window else None, process_count=args.process_count)


def load_features(files: list[Path], tokenizer, dataset_type: str, block_size: int, cache_dir: str,
                  reprocess: bool = False, strict_utf8: bool = False, build: bool = True,
                  reading: CorpusReading | None = None, stride: float | None = None,
                  process_count: int | None = None) -> Features:
    """The features of `files` for these settings: from the cache when present (unless `reprocess`), else built.
    With `build=False` (non-zero ranks) only an existing cache is opened. `reading` says how the sources are read
    (its strict_utf8 wins over the argument of that name). `stride`: sliding windows whose starts are this share
    of the window apart (None: back-to-back blocks). `process_count`: tokenizing processes (None: the cores this
    process may use); the features never depend on it."""
    reading = reading or CorpusReading(strict_utf8=strict_utf8)
    key_src = {"corpus": content_hash(files), "tokenizer": fingerprint(tokenizer), "type": dataset_type,
               "block": block_size, "v": FORMAT_VERSION, **_cutting_key(reading, stride), **reading.key(files)}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir) / "features" / key
    if build and (reprocess or not (folder / "meta.json").exists()):
        _build(files, tokenizer, dataset_type, block_size, folder, reading, stride, process_count)
    elif (folder / "meta.json").exists():
        log.info("Features: reusing %s", folder)
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r") if meta["num_tokens"] else \
        np.zeros(0, dtype=meta["dtype"])
    offsets = np.memmap(folder / "offsets.bin", dtype=np.int64, mode="r")  # 8 bytes an example: not held in memory
    score_from = np.fromfile(folder / "score_from.bin", dtype=np.int64) if meta.get("stride") else None
    return Features(tokens, offsets, folder, meta, score_from)


def _build(files, tokenizer, dataset_type, block_size, folder: Path, reading: CorpusReading, stride: float | None,
           process_count: int | None) -> None:
    backend = clean_backend(tokenizer)
    prefix, suffix = special_affixes(backend)
    content = block_size - len(prefix) - len(suffix)
    if content < 1:
        raise ValueError(f"block_size {block_size} leaves no room for text beside {len(prefix) + len(suffix)} "
                         "special tokens")
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    check_sources(files, reading)  # every source readable before anything is tokenized
    stats = CorpusStats()
    progress = _Progress(sum(_source_size(f) for f in files))
    per_file = np.zeros(len(files), dtype=np.int64)
    written = {}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        writer = written["writer"] = _ExampleWriter(tmp, dtype, prefix, suffix, sliding=stride is not None)
        with contextlib.closing(_encoded_chunks(files, backend, reading, stats, progress, process_count)) as chunks:
            _cut_examples(_counted(chunks, per_file), writer, dataset_type, content, window_step(content, stride),
                          stride is not None)
        writer.close()
        meta = {"dataset_type": dataset_type, "block_size": block_size, "dtype": np.dtype(dtype).name,
                "num_examples": writer.count, "num_tokens": writer.num_tokens, "files": [str(f) for f in files],
                "lines": stats.lines, "bytes": stats.bytes, "invalid_bytes_replaced": stats.invalid_bytes_replaced,
                "rows_skipped": stats.rows_skipped, "prefix_tokens": len(prefix), "stride": stride,
                "window_step": window_step(content, stride), "encoding": reading.encoding,
                "data_format": reading.data_format, "tokens_per_file": per_file.tolist(),
                "text_column": reading.text_column, "dataset_split": reading.split}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    atomic.replace_folder(folder, write)
    writer = written["writer"]
    progress.done(writer)
    if writer.count == 0:
        raise ValueError(f"corpus {', '.join(map(str, files))} produced no examples")


def _source_size(f: Path) -> int:
    return sum(m.stat().st_size for m in members(f))


def _counted(chunks, per_file: np.ndarray):
    """Pass the encoded chunks on, adding up each source's content tokens (for the statistics)."""
    for chunk in chunks:
        per_file[chunk[0]] += len(chunk[1])
        yield chunk


def _cut_examples(chunks, writer, dataset_type: str, content: int, step: int, sliding: bool) -> None:
    """Turn encoded chunks into examples: one stream over all files ("simple"), one per file ("text"), or one
    example per line ("line_by_line": a long line is cut to one block, or into windows when `sliding`)."""
    stream = _Windows(writer, content, step, min_tail=2)
    current = None
    for file_index, flat, lengths, _ in chunks:
        if dataset_type == "text" and current is not None and file_index != current:
            stream.finish()
        current = file_index
        if dataset_type != "line_by_line":
            stream.push(flat)
            continue
        short = []  # lines written together, in order, between the windows of long lines
        for seq in np.split(flat, np.cumsum(lengths)[:-1]):
            if not len(seq):
                continue
            if len(seq) <= content or not sliding:
                short.append(seq[:content])
                continue
            writer.add_ragged(short)
            short = []
            windows = _Windows(writer, content, step, min_tail=1)
            windows.push(seq)
            windows.finish()
        writer.add_ragged(short)
    stream.finish()


class _Windows:
    """Cuts a token stream into examples of `content` tokens whose starts are `step` apart (`step == content`:
    back-to-back blocks), the last one ending where the stream ends: the strided evaluation of a fixed-length model
    as transformers documents it. Every window but the stream's first starts with `content - step` tokens the
    previous one already covered; they are recorded as its score_from. A last window shorter than `min_tail` is
    dropped (a lone token is not worth a row, and a causal model cannot score it)."""

    def __init__(self, writer, content: int, step: int, min_tail: int):
        self.writer, self.content, self.step, self.min_tail = writer, content, step, min_tail
        self.overlap = content - step
        self.pending = np.zeros(0, dtype=np.int64)  # the stream from the next window's start on
        self.started = False

    def push(self, ids: np.ndarray) -> None:
        buf = np.concatenate([self.pending, ids]) if len(self.pending) else np.asarray(ids, dtype=np.int64)
        n = (len(buf) - self.content) // self.step + 1 if len(buf) >= self.content else 0
        if n:
            windows = np.lib.stride_tricks.sliding_window_view(buf, self.content)[::self.step][:n]
            score_from = np.full(n, self.overlap, dtype=np.int64)
            if not self.started:
                score_from[0] = 0
            self.writer.add_blocks(windows, score_from)
            self.started = True
            buf = buf[n * self.step:]
        self.pending = buf.copy()  # not a view: it would keep the whole chunk alive

    def finish(self) -> None:
        """End the stream: write its last (shorter) window if it holds tokens no window has covered yet."""
        covered = self.overlap if self.started else 0
        tail = self.pending
        if len(tail) > covered and len(tail) >= self.min_tail:
            self.writer.add_blocks(tail[None, :], np.array([covered], dtype=np.int64))
        self.pending, self.started = np.zeros(0, dtype=np.int64), False


class _ExampleWriter:
    """Appends examples, with the tokenizer's special tokens around each, to tokens.bin, and their boundaries to
    offsets.bin as it goes (with sliding windows each example's score_from to score_from.bin): nothing grows in
    memory with the corpus."""

    def __init__(self, folder: Path, dtype, prefix: np.ndarray, suffix: np.ndarray, sliding: bool):
        self.tokens = open(folder / "tokens.bin", "wb")
        self.offsets = open(folder / "offsets.bin", "wb")
        np.zeros(1, dtype=np.int64).tofile(self.offsets)
        self.score_from = open(folder / "score_from.bin", "wb") if sliding else None
        self.dtype, self.prefix, self.suffix = dtype, prefix, suffix
        self.count = 0
        self.num_tokens = 0

    def add_blocks(self, blocks: np.ndarray, score_from: np.ndarray | None = None) -> None:
        """Write a (n, length) array of examples of one length."""
        n = len(blocks)
        if not n:
            return
        full = np.concatenate([np.broadcast_to(self.prefix, (n, len(self.prefix))), blocks,
                               np.broadcast_to(self.suffix, (n, len(self.suffix)))], axis=1)
        full.astype(self.dtype).tofile(self.tokens)
        self._record(np.full(n, full.shape[1], dtype=np.int64), score_from)

    def add_ragged(self, seqs: list[np.ndarray]) -> None:
        """Write examples of different lengths (lines) in one write."""
        if not seqs:
            return
        pieces = [p for seq in seqs for p in (self.prefix, seq, self.suffix)]
        np.concatenate(pieces).astype(self.dtype).tofile(self.tokens)
        extra = len(self.prefix) + len(self.suffix)
        self._record(np.fromiter((len(s) + extra for s in seqs), dtype=np.int64, count=len(seqs)), None)

    def _record(self, lengths: np.ndarray, score_from: np.ndarray | None) -> None:
        (self.num_tokens + np.cumsum(lengths)).astype(np.int64).tofile(self.offsets)
        if self.score_from is not None:
            given = score_from if score_from is not None else np.zeros(len(lengths), np.int64)
            np.asarray(given, dtype=np.int64).tofile(self.score_from)
        self.num_tokens += int(lengths.sum())
        self.count += len(lengths)

    def close(self) -> None:
        for f in (self.tokens, self.offsets, self.score_from):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()


# ---------------------------------------------------------------------------------------------------------------
# Tokenizing: a clean copy of the tokenizer, ~1 MB of text at a time, in worker processes when it pays
# ---------------------------------------------------------------------------------------------------------------

def clean_backend(tokenizer) -> tokenizers.Tokenizer:
    """A copy of the tokenizer's Rust pipeline with padding and truncation off. Tokenizers saved by others
    (sentence-transformers exports, many hub models) switch both on in tokenizer.json, which would pad every line
    to a fixed length or silently cut it; corpus text must be encoded exactly, whatever the tokenizer was saved for."""
    source = getattr(tokenizer, "backend_tokenizer", tokenizer)
    copy = tokenizers.Tokenizer.from_str(source.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def special_affixes(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The special token ids the tokenizer puts before and after a single sequence ([CLS] / [SEP], <s> / </s>,
    nothing for GPT-2), read off its own post-processor by encoding a probe with and without them (through a
    clean copy, so a saved padding or truncation setting cannot hide them)."""
    backend = clean_backend(tokenizer)
    for probe in ("a", "the", "x", "0", "."):
        bare = backend.encode(probe, add_special_tokens=False).ids
        if bare:
            full = backend.encode(probe, add_special_tokens=True).ids
            for at in range(len(full) - len(bare) + 1):
                if full[at:at + len(bare)] == bare:
                    return (np.asarray(full[:at], dtype=np.int64),
                            np.asarray(full[at + len(bare):], dtype=np.int64))
    raise ValueError("cannot work out the tokenizer's special tokens: it encodes no probe text")


def _text_chunks(files, reading: CorpusReading, stats: CorpusStats):
    """(file index, texts, characters) for ~ENCODE_BATCH_CHARS of text at a time; a chunk never spans two files."""
    for index, path in enumerate(files):
        batch, size = [], 0
        for text in source_texts(path, reading, stats):
            batch.append(text)
            size += len(text)
            if size >= ENCODE_BATCH_CHARS:
                yield index, batch, size
                batch, size = [], 0
        if batch:
            yield index, batch, size


def _encode_chunk(backend: tokenizers.Tokenizer, chunk) -> tuple[int, np.ndarray, np.ndarray, int]:
    """(file index, every text's ids back to back, ids per text, characters): flat arrays travel between
    processes far faster than lists of lists."""
    index, texts, size = chunk
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    ids = [e.ids for e in encode(texts, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return index, flat, lengths, size


_worker_backend: tokenizers.Tokenizer | None = None


def _worker_start(backend_json: str) -> None:
    global _worker_backend
    # Each worker is one tokenizing thread: the processes are the parallelism, and Rust threads forked from a
    # parent that already ran its own pool would deadlock.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_backend = tokenizers.Tokenizer.from_str(backend_json)


def _worker_encode(chunk):
    return _encode_chunk(_worker_backend, chunk)


def tokenizing_processes(wanted: int | None) -> int:
    """`process_count`, or the cores this process may use."""
    if wanted:
        return int(wanted)
    return host.usable_cores()


AHEAD_PER_PROCESS = 2
"""Chunks handed to the workers and not yet taken back, per worker: enough that none waits for work, few enough
that memory stays a few MB per worker however slow the writing side is."""


def _encoded_chunks(files, backend, reading: CorpusReading, stats: CorpusStats, progress,
                    process_count: int | None):
    """Encoded chunks of the corpus in corpus order. With more than one chunk and more than one process, chunks
    are tokenized in a pool of forked workers and taken back in order, so the features are the same whatever the
    count. Reading is paced by the taking back: at most AHEAD_PER_PROCESS chunks per worker are out at a time
    (Pool.imap would read ahead as fast as the workers go and pile their results up whenever this side is
    slower, e.g. starved of CPU). A corpus error raised while reading comes back here at its place in the order;
    the pool is ended on any exit."""
    chunks = _text_chunks(files, reading, stats)
    head = list(itertools.islice(chunks, 2))
    processes = tokenizing_processes(process_count)
    progress.processes = processes if len(head) > 1 and processes > 1 else 1
    if progress.processes == 1:
        # process_count=1 means one core: the tokenizer's own thread pool would otherwise use them all.
        with _tokenizer_threads(off=process_count == 1):
            for chunk in itertools.chain(head, chunks):
                yield progress.seen_chunk(_encode_chunk(backend, chunk))
        return
    with _forked_pool(processes, backend.to_str()) as pool:
        out = collections.deque()
        for chunk in itertools.chain(head, chunks):
            out.append(pool.apply_async(_worker_encode, (chunk,)))
            if len(out) >= AHEAD_PER_PROCESS * processes:
                yield progress.seen_chunk(out.popleft().get())
        while out:
            yield progress.seen_chunk(out.popleft().get())


@contextlib.contextmanager
def _tokenizer_threads(off: bool):
    """With `off`, the Rust tokenizer encodes batches on this thread alone while the block runs."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    if off:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if off and before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        elif off:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _forked_pool(processes: int, backend_json: str):
    """A pool of forked workers. TOKENIZERS_PARALLELISM is set while forking so the children start single-
    threaded without the tokenizers library's fork warning; this process's own setting is restored at once."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return multiprocessing.get_context("fork").Pool(processes, _worker_start, (backend_json,))
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


class _Progress:
    def __init__(self, total_bytes: int):
        self.total, self.seen, self.start, self.last = max(total_bytes, 1), 0, time.time(), time.time()
        self.processes = 1

    def seen_chunk(self, encoded):
        self.update(encoded[3])
        return encoded

    def update(self, chars: int) -> None:
        self.seen += chars
        now = time.time()
        if now - self.last >= 10:
            rate = self.seen / (now - self.start)
            eta = max(self.total - self.seen, 0) / max(rate, 1)
            log.info("Tokenizing: %.0f%% (%.1f MB/s, ETA %.0fs)", 100 * min(self.seen / self.total, 1),
                     rate / 1e6, eta)
            self.last = now

    def done(self, writer) -> None:
        secs = time.time() - self.start
        log.info("Features: %d examples, %d tokens in %.1fs (%.1f MB/s, %d tokenizing process%s)", writer.count,
                 writer.num_tokens, secs, self.seen / max(secs, 1e-9) / 1e6, self.processes,
                 "" if self.processes == 1 else "es")


# ---------------------------------------------------------------------------------------------------------------
# A user's own Dataset class (Simple Transformers' dataset_class)
# ---------------------------------------------------------------------------------------------------------------

def custom_features(dataset_class, files: list[Path], tokenizer, args, block_size: int, mode: str) -> Features:
    """Features from `dataset_class(tokenizer, args, file_path, mode, block_size)`, called once per file; its
    items are 1-D token ids (tensor, array or list) with the special tokens the class put in. Held in memory
    (the class built its items in memory already); every rank builds its own."""
    name = getattr(dataset_class, "__name__", repr(dataset_class))
    examples = []
    for path in files:
        dataset = dataset_class(tokenizer, args, str(path), mode, block_size)
        items = (dataset[i] for i in range(len(dataset))) if hasattr(dataset, "__len__") else iter(dataset)
        for i, item in enumerate(items):
            ids = _item_ids(item, name, i, path, block_size)
            if len(ids):
                examples.append(ids)
    if not examples:
        raise ValueError(f"dataset_class {name} produced no examples from {', '.join(map(str, files))}")
    lengths = np.fromiter(map(len, examples), dtype=np.int64, count=len(examples))
    tokens = np.concatenate(examples)
    dtype = np.uint16 if tokens.max() <= np.iinfo(np.uint16).max else np.int32
    meta = {"dataset_type": "custom", "dataset_class": name, "block_size": block_size, "dtype": np.dtype(dtype).name,
            "num_examples": len(examples), "num_tokens": int(lengths.sum()), "files": [str(f) for f in files],
            "prefix_tokens": 0}
    placeholder = Path(args.cache_dir) / "features" / f"custom-{name}"  # nothing is written there
    return Features(tokens.astype(dtype), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), placeholder,
                    meta)


def _item_ids(item, name: str, index: int, path: Path, block_size: int) -> np.ndarray:
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    ids = np.asarray(item)
    where = f"dataset_class {name}, item {index} of {path}"
    if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"{where}: expected a 1-D sequence of token ids, got shape {ids.shape} of {ids.dtype}")
    if len(ids) > block_size:
        raise ValueError(f"{where}: {len(ids)} tokens, more than block_size {block_size}")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"{where}: negative token id {int(ids.min())}")
    return ids.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Order and batches
# ---------------------------------------------------------------------------------------------------------------
