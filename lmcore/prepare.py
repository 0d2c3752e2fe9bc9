"""Corpus preparation: raw corpus files -> a clean, de-duplicated train split and an eval split, with statistics.

Each non-blank line is one document. A document is normalised (Unicode NFC, surrounding whitespace removed) so
that text which looks the same is byte-equal, and an exact repeat of an earlier document is dropped. The eval split
is chosen by a hash of each document's text, not by its position or a random draw: the same document always lands
on the same side, so a corpus that grows keeps its old eval documents and runs on it stay comparable.

Reading (files, directories, gzip, BOM, CRLF, invalid UTF-8, binary files, huge lines) is `lmcore.corpus`, so
preparation accepts and rejects exactly what training does.

    from lmcore.corpus import resolve_files
    from lmcore.prepare import write_splits
    stats = write_splits(resolve_files("data/"), [], 0.05, False, Path("prepared"))   # prepared/train.txt, eval.txt
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from pathlib import Path
from typing import Callable

from .corpus import CorpusError, CorpusStats, iter_corpus

log = logging.getLogger(__name__)

PREP_VERSION = 2
"""Bumped when preparation changes what it writes, so callers that cache prepared corpora do not reuse old ones."""
PROGRESS_BYTES = 50 << 20
"""A progress line every this many bytes read."""


def normalise(line: str) -> str:
    """NFC (so visually equal text is byte-equal and de-duplicates), no stray surrounding whitespace."""
    return unicodedata.normalize("NFC", line).strip()


def check_fraction(eval_fraction: float, has_eval_corpus: bool) -> None:
    """Without a separate eval corpus the eval split is a fraction of the corpus, which must pick something."""
    if not has_eval_corpus and not (isinstance(eval_fraction, (int, float)) and 0.0 < eval_fraction < 1.0):
        raise CorpusError(f"eval_fraction={eval_fraction!r}: must be between 0 and 1 (exclusive) when no "
                          "eval_corpus is given, so there is something to measure perplexity on")


class Splitter:
    """Drops blank and repeated documents and sends each kept one to the train or the eval writer.

    eval_fraction: the share of documents the hash sends to eval (None: only documents added with to_eval=True go
    there, as with a separate eval corpus)."""

    def __init__(self, eval_fraction: float | None, train, eval_):
        self.threshold = None if eval_fraction is None else int(eval_fraction * 2**64)
        self.train, self.eval = train, eval_
        self.seen: set[bytes] = set()
        self.counts = {"documents": 0, "duplicates_dropped": 0, "train_lines": 0, "eval_lines": 0}
        self.nearest: tuple[int, str] | None = None
        """The train document whose hash lies nearest the eval side: a corpus too small for its fraction to pick
        anything gives this one to eval."""

    def add(self, line: str, to_eval: bool | None = None) -> None:
        line = normalise(line)
        if not line:
            return
        h = hashlib.blake2b(line.encode(), digest_size=16).digest()
        if h in self.seen:
            self.counts["duplicates_dropped"] += 1
            return
        self.seen.add(h)
        self.counts["documents"] += 1
        if to_eval is None and self.threshold is None:
            to_eval = False
        if to_eval is None:
            bucket = int.from_bytes(h[:8], "big")
            to_eval = bucket < self.threshold
            if not to_eval and (self.nearest is None or bucket < self.nearest[0]):
                self.nearest = (bucket, line)
        (self.eval if to_eval else self.train).write(line + "\n")
        self.counts["eval_lines" if to_eval else "train_lines"] += 1


def write_splits(files: list[Path], eval_files: list[Path], eval_fraction: float, strict_utf8: bool, out: Path,
                 report: Callable[..., None] | None = None) -> dict:
    """Write `out/train.txt` and `out/eval.txt` from `files` (and `eval_files`, which then are the whole eval
    split); returns the statistics (files, bytes, lines, invalid bytes replaced, documents, duplicates dropped,
    train/eval lines and bytes). `report(format, *args)` receives the progress lines (default: this module's
    logger)."""
    report = report or log.info
    check_fraction(eval_fraction, bool(eval_files))
    read = CorpusStats()
    start, next_report = time.time(), PROGRESS_BYTES
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.txt", "w", encoding="utf-8") as train, open(out / "eval.txt", "w", encoding="utf-8") as ev:
        split = Splitter(None if eval_files else eval_fraction, train, ev)
        for line in iter_corpus(list(eval_files), strict_utf8, read):
            split.add(line, to_eval=True)
        for line in iter_corpus(list(files), strict_utf8, read):
            split.add(line)
            if read.bytes >= next_report:
                report("prepare_corpus: %d MB read, %d documents kept", read.bytes >> 20, split.counts["documents"])
                next_report += PROGRESS_BYTES
    counts = split.counts
    if counts["eval_lines"] == 0 and split.nearest is not None:
        _move_to_eval(out, split.nearest[1])
        counts["eval_lines"], counts["train_lines"] = 1, counts["train_lines"] - 1
    if counts["train_lines"] == 0:
        raise CorpusError(f"{', '.join(map(str, files))}: no text left for training after removing blank lines, "
                          "duplicates and the eval split")
    stats = {"files": read.files, "bytes": read.bytes, "lines": read.lines,
             "invalid_bytes_replaced": read.invalid_bytes_replaced, **counts,
             "train_bytes": (out / "train.txt").stat().st_size, "eval_bytes": (out / "eval.txt").stat().st_size}
    report("prepare_corpus: %d file(s), %d lines -> %d train / %d eval documents, %d duplicate(s) dropped, "
           "%d invalid byte(s) replaced (%.1fs)", stats["files"], stats["lines"], counts["train_lines"],
           counts["eval_lines"], counts["duplicates_dropped"], stats["invalid_bytes_replaced"], time.time() - start)
    return stats


def _move_to_eval(out: Path, line: str) -> None:
    train = out / "train.txt"
    kept = [t for t in train.read_text(encoding="utf-8").splitlines() if t != line]
    train.write_text("".join(t + "\n" for t in kept), encoding="utf-8")
    (out / "eval.txt").write_text(line + "\n", encoding="utf-8")
