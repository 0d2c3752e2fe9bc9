"""Corpus -> tokenized examples on disk, memory-mapped, cached by content; and the batches drawn from them.

On-disk format (one folder per corpus × tokenizer × settings, under `cache_dir/features/<key>/`): `tokens.bin`, all
examples' token ids back to back (uint16 when the vocabulary fits, else int32), `offsets.bin` (int64, n + 1 example
boundaries) and `meta.json`. Flat files + offsets serve all three dataset types, slice in O(1) with no copy, and
keep memory flat however large the corpus: a 1 GB corpus is streamed through in chunks and never held whole.
The folder is written under a temporary name and renamed, so a half-written cache is never found.

Data order is a pure function of (seed, epoch): resume needs only the position, and every rank derives its shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import atomic
from .corpus import CorpusStats, content_hash, iter_lines
from .tokenizer import fingerprint

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENCODE_BATCH_CHARS = 1 << 20


@dataclass
class Features:
    """Tokenized examples: `tokens[offsets[i]:offsets[i+1]]` is example i (special tokens included)."""

    tokens: np.ndarray
    offsets: np.ndarray
    path: Path
    meta: dict

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def load_features(files: list[Path], tokenizer, dataset_type: str, block_size: int, cache_dir: str,
                  reprocess: bool = False, strict_utf8: bool = False, build: bool = True) -> Features:
    """The features of `files` for these settings: from the cache when present (unless `reprocess`), else built.
    With `build=False` (non-zero ranks) only an existing cache is opened."""
    key_src = {"corpus": content_hash(files), "tokenizer": fingerprint(tokenizer), "type": dataset_type,
               "block": block_size, "v": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir) / "features" / key
    if build and (reprocess or not (folder / "meta.json").exists()):
        _build(files, tokenizer, dataset_type, block_size, folder, strict_utf8)
    elif (folder / "meta.json").exists():
        log.info("Features: reusing %s", folder)
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r") if meta["num_tokens"] else \
        np.zeros(0, dtype=meta["dtype"])
    offsets = np.fromfile(folder / "offsets.bin", dtype=np.int64)
    return Features(tokens, offsets, folder, meta)


def _build(files, tokenizer, dataset_type, block_size, folder: Path, strict_utf8: bool) -> None:
    prefix, suffix = special_affixes(tokenizer)
    content = block_size - len(prefix) - len(suffix)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    stats = CorpusStats()
    progress = _Progress(sum(f.stat().st_size for f in files))
    written = {}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        writer = written["writer"] = _ExampleWriter(tmp, dtype, tokenizer)
        carry = np.zeros(0, dtype=np.int64)  # "simple" joins all files into one stream; "text" restarts per file
        for f in files:
            for ids in _encode_lines(tokenizer, iter_lines(f, strict_utf8, stats), progress):
                if dataset_type == "line_by_line":
                    for seq in ids:
                        if seq:
                            writer.add(np.asarray(seq[:content], dtype=np.int64))
                    continue
                carry = np.concatenate([carry, np.fromiter((t for seq in ids for t in seq), dtype=np.int64)])
                full = len(carry) // content * content
                writer.add_blocks(carry[:full].reshape(-1, content))
                carry = carry[full:]
            if dataset_type == "text":
                _add_tail(writer, carry)
                carry = carry[:0]
        _add_tail(writer, carry)
        writer.close()
        meta = {"dataset_type": dataset_type, "block_size": block_size, "dtype": np.dtype(dtype).name,
                "num_examples": writer.count, "num_tokens": writer.num_tokens, "files": [str(f) for f in files],
                "lines": stats.lines, "bytes": stats.bytes, "invalid_bytes_replaced": stats.invalid_bytes_replaced}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    atomic.replace_folder(folder, write)
    writer = written["writer"]
    progress.done(writer)
    if writer.count == 0:
        raise ValueError(f"corpus {', '.join(map(str, files))} produced no examples")


def special_affixes(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The special token ids the tokenizer puts before and after a single sequence ([CLS] / [SEP], <s> / </s>,
    nothing for GPT-2), read off its own post-processor by encoding a probe with and without them."""
    backend = tokenizer.backend_tokenizer
    for probe in ("a", "the", "x", "0", "."):
        bare = backend.encode(probe, add_special_tokens=False).ids
        if bare:
            full = backend.encode(probe, add_special_tokens=True).ids
            for at in range(len(full) - len(bare) + 1):
                if full[at:at + len(bare)] == bare:
                    return (np.asarray(full[:at], dtype=np.int64),
                            np.asarray(full[at + len(bare):], dtype=np.int64))
    raise ValueError("cannot work out the tokenizer's special tokens: it encodes no probe text")


def _add_tail(writer, carry: np.ndarray) -> None:
    """Keep a short last block (padded in batches) rather than drop its text; a lone token is not worth a row."""
    if len(carry) >= 2:
        writer.add(carry)


def _encode_lines(tokenizer, lines, progress):
    """Yield lists of token-id lists, one per line, encoding ~1 MB of text per call to the Rust tokenizer."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    batch, size = [], 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= ENCODE_BATCH_CHARS:
            yield [e.ids for e in encode(batch, add_special_tokens=False)]
            progress.update(size)
            batch, size = [], 0
    if batch:
        yield [e.ids for e in encode(batch, add_special_tokens=False)]
        progress.update(size)


class _ExampleWriter:
    """Appends examples, with the tokenizer's special tokens around each, to tokens.bin; records boundaries."""

    def __init__(self, folder: Path, dtype, tokenizer):
        self.tokens = open(folder / "tokens.bin", "wb")
        self.offsets_path = folder / "offsets.bin"
        self.lengths: list[np.ndarray] = []
        self.dtype = dtype
        self.prefix, self.suffix = special_affixes(tokenizer)
        self.count = 0
        self.num_tokens = 0

    def add(self, ids: np.ndarray) -> None:
        self.add_blocks(ids[None, :])

    def add_blocks(self, blocks: np.ndarray) -> None:
        """Write a (n, length) array of examples of one length."""
        if not len(blocks):
            return
        n = len(blocks)
        full = np.concatenate([np.broadcast_to(self.prefix, (n, len(self.prefix))), blocks,
                               np.broadcast_to(self.suffix, (n, len(self.suffix)))], axis=1)
        full.astype(self.dtype).tofile(self.tokens)
        self.lengths.append(np.full(n, full.shape[1], dtype=np.int64))
        self.num_tokens += full.size
        self.count += n

    def close(self) -> None:
        self.tokens.flush()
        os.fsync(self.tokens.fileno())
        self.tokens.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tofile(self.offsets_path)


class _Progress:
    def __init__(self, total_bytes: int):
        self.total, self.seen, self.start, self.last = max(total_bytes, 1), 0, time.time(), time.time()

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
        log.info("Features: %d examples, %d tokens in %.1fs (%.1f MB/s)", writer.count, writer.num_tokens, secs,
                 self.seen / max(secs, 1e-9) / 1e6)


# ---------------------------------------------------------------------------------------------------------------
# Order and batches
# ---------------------------------------------------------------------------------------------------------------

def epoch_batches(features: Features, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  group_by_length: bool = False) -> list[np.ndarray]:
    """This rank's batches (arrays of example indices) for one epoch, a pure function of (seed, epoch).

    Global batches of `batch_size * world` are cut from one shuffled order and each rank takes its slice, so the
    processes together see every example once. With several processes the last global batch is filled up by
    wrapping around, so no rank is left without work. `group_by_length` sorts examples by length inside windows of
    50 batches before batching (then shuffles the batches), so each batch holds lines of similar length and
    padding stays small.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(features)
    order = rng.permutation(n)
    global_bs = batch_size * world
    if group_by_length:
        lengths = features.lengths()
        window = global_bs * 50
        order = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                                for w in np.array_split(order, max(1, math.ceil(n / window)))])
    batches = [order[i:i + global_bs] for i in range(0, n, global_bs)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if world > 1 and batches and len(batches[-1]) < global_bs:
        batches[-1] = np.resize(np.concatenate([batches[-1], order]), global_bs)
    return [b[rank::world] for b in batches]


def collate(features: Features, indices, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad examples to the longest in the batch: input_ids and attention_mask, shape (batch, length)."""
    examples = [features.example(int(i)) for i in indices]
    length = max(len(e) for e in examples)
    ids = np.full((len(examples), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), length), dtype=np.int64)
    for row, e in enumerate(examples):
        ids[row, :len(e)] = e
        mask[row, :len(e)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
