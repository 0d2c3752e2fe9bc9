"""Corpus preparation: raw corpus files -> a clean, de-duplicated train split and an eval split, with statistics.

Each non-blank line is one document: a line of a text file, or a line of the text of a row of any other container
(JSON Lines, CSV / TSV, Parquet, Arrow, saved or cached datasets; `lmcore.data.containers`), read through
`lmcore.data.corpus.source_rows`, the one rows generator training reads with too. A document is normalised (Unicode NFC,
surrounding whitespace removed) so that text which looks the same is byte-equal, and an exact repeat of an earlier
document is dropped. The eval split is chosen by a hash of each document's text, not by its position or a random
draw: the same document always lands on the same side, so a corpus that grows keeps its old eval documents and runs
on it stay comparable.

Reading (files, directories, gzip, BOM, CRLF, invalid UTF-8, binary files, huge lines) is `lmcore.data.corpus`, so
preparation accepts and rejects exactly what training does.

    from lmcore.data.corpus import resolve_files
    from lmcore.data.prepare import write_splits
    stats = write_splits(resolve_files("data/"), [], 0.05, False, Path("prepared"))   # prepared/train.txt, eval.txt
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import unicodedata
from pathlib import Path
from typing import Callable

import numpy as np

from .corpus import (MAX_SEGMENT, CorpusError, CorpusReading, CorpusStats, check_sources, kind_of, segments,
                     source_rows)

log = logging.getLogger(__name__)

PREP_VERSION = 3
"""Bumped when preparation changes what it writes, so callers that cache prepared corpora do not reuse old ones."""
PROGRESS_BYTES = 50 << 20
"""A progress line every this many characters read."""


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
    there, as with a separate eval corpus). Counts are kept in total and for the source being read (`source`)."""

    def __init__(self, eval_fraction: float | None, train, eval_):
        self.threshold = None if eval_fraction is None else int(eval_fraction * 2**64)
        self.train, self.eval = train, eval_
        self.seen: set[bytes] = set()
        self.counts = {"documents": 0, "duplicates_dropped": 0, "train_lines": 0, "eval_lines": 0}
        self.source: SourceFigures | None = None
        self.nearest: tuple[int, str, SourceFigures | None] | None = None
        """The train document whose hash lies nearest the eval side (and its source): a corpus too small for its
        fraction to pick anything gives this one to eval."""

    def add(self, line: str, to_eval: bool | None = None) -> None:
        line = normalise(line)
        if not line:
            return
        h = hashlib.blake2b(line.encode(), digest_size=16).digest()
        if h in self.seen:
            self._count("duplicates_dropped")
            return
        self.seen.add(h)
        self._count("documents")
        if self.source is not None:
            self.source.lengths.append(len(line))
        if to_eval is None and self.threshold is None:
            to_eval = False
        if to_eval is None:
            bucket = int.from_bytes(h[:8], "big")
            to_eval = bucket < self.threshold
            if not to_eval and (self.nearest is None or bucket < self.nearest[0]):
                self.nearest = (bucket, line, self.source)
        (self.eval if to_eval else self.train).write(line + "\n")
        self._count("eval_lines" if to_eval else "train_lines")

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        if self.source is not None:
            self.source.counts[what] += 1


class SourceFigures:
    """What one source gave: its rows, the empty and non-text ones, characters, and the documents kept from it
    (train and eval lines, in file order: a source's documents are one contiguous run of lines in each split), with
    a histogram of their lengths that grows with the longest one (memory: the longest document's length)."""

    def __init__(self, source: Path, container: str, split: str):
        self.row = {"source": str(source), "container": container, "split": split, "bytes": 0, "rows": 0,
                    "empty_rows": 0, "non_text_rows": 0, "characters": 0, "invalid_bytes": 0}
        self.counts = {"documents": 0, "duplicates_dropped": 0, "train_lines": 0, "eval_lines": 0}
        self.histogram = np.zeros(0, dtype=np.int64)
        self.lengths: list[int] = []

    def flush(self) -> None:
        if self.lengths:
            counted = np.bincount(np.asarray(self.lengths, dtype=np.int64))
            if len(counted) > len(self.histogram):
                counted[:len(self.histogram)] += self.histogram
                self.histogram = counted
            else:
                self.histogram[:len(counted)] += counted
            self.lengths = []

    def figures(self) -> dict:
        self.flush()
        n = int(self.histogram.sum())
        cumulative = np.cumsum(self.histogram)
        at = (lambda q: int(np.searchsorted(cumulative, max(1, int(np.ceil(q * n)))))) if n else (lambda q: 0)
        mean = float((self.histogram * np.arange(len(self.histogram))).sum() / n) if n else 0.0
        return {**self.row, **self.counts, "length_mean": round(mean, 1), "length_p50": at(0.5),
                "length_p90": at(0.9), "length_p99": at(0.99), "length_max": len(self.histogram) - 1 if n else 0}


def write_splits(files: list[Path], eval_files: list[Path], eval_fraction: float, strict_utf8: bool, out: Path,
                 report: Callable[..., None] | None = None, reading: CorpusReading | None = None) -> dict:
    """Write `out/train.txt` and `out/eval.txt` from `files` (and `eval_files`, which then are the whole eval
    split); returns the statistics (files, bytes, lines, invalid bytes replaced, documents, duplicates dropped,
    train/eval lines and bytes, and `per_source`: one dict of figures per source, eval sources first).

    `reading` says how the sources are read (text column, split, encoding, a forced format; default: by extension,
    column "text"); `strict_utf8` overrides its own. Rows of JSON Lines, CSV, Parquet, Arrow and datasets sources
    are documents like a text file's lines: a row holding several lines gives one document per line, as the same
    text in a text file would, so every container yields the same prepared corpus. `report(format, *args)`
    receives the progress lines (default: this module's logger)."""
    report = report or log.info
    reading = dataclasses.replace(reading or CorpusReading(), strict_utf8=strict_utf8)
    check_fraction(eval_fraction, bool(eval_files))
    check_sources(list(eval_files) + list(files), reading)
    read = CorpusStats()
    start, next_report, characters = time.time(), PROGRESS_BYTES, 0
    figures: list[SourceFigures] = []
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.txt", "w", encoding="utf-8") as train, open(out / "eval.txt", "w", encoding="utf-8") as ev:
        split = Splitter(None if eval_files else eval_fraction, train, ev)
        for source, to_eval in [(f, True) for f in eval_files] + [(f, None) for f in files]:
            kind = kind_of(source, reading.data_format)
            split.source = SourceFigures(source, kind, "eval" if to_eval else "train")
            figures.append(split.source)
            own, before = CorpusStats(), characters
            for row in source_rows(source, reading, own):
                _add_row(split, row, to_eval)
                characters = before + split.source.row["characters"]
                if characters >= next_report:
                    report("prepare_corpus: %d M characters read, %d documents kept (%.0f M characters/s)",
                           characters >> 20, split.counts["documents"],
                           characters / 2**20 / max(time.time() - start, 1e-9))
                    next_report += PROGRESS_BYTES
            if kind != "text":  # a container's lines are its rows
                own.lines = split.source.row["rows"]
            split.source.row.update(bytes=own.bytes, invalid_bytes=own.invalid_bytes_replaced)
            split.source.flush()
            for name in ("files", "bytes", "lines", "invalid_bytes_replaced", "rows_skipped"):
                setattr(read, name, getattr(read, name) + getattr(own, name))
    counts = split.counts
    if counts["eval_lines"] == 0 and split.nearest is not None:
        _, line, source = split.nearest
        _move_to_eval(out, line)
        counts["eval_lines"], counts["train_lines"] = 1, counts["train_lines"] - 1
        if source is not None:
            source.counts["eval_lines"], source.counts["train_lines"] = 1, source.counts["train_lines"] - 1
    if counts["train_lines"] == 0:
        raise CorpusError(f"{', '.join(map(str, files))}: no text left for training after removing blank lines, "
                          "duplicates and the eval split")
    stats = {"files": read.files, "bytes": read.bytes, "lines": read.lines,
             "invalid_bytes_replaced": read.invalid_bytes_replaced, "rows_skipped": read.rows_skipped, **counts,
             "train_bytes": (out / "train.txt").stat().st_size, "eval_bytes": (out / "eval.txt").stat().st_size,
             "per_source": [f.figures() for f in figures]}
    report("prepare_corpus: %d source(s), %d rows -> %d train / %d eval documents, %d duplicate(s) dropped, "
           "%d empty or non-text row(s), %d invalid byte(s) replaced (%.1fs)", stats["files"], stats["lines"],
           counts["train_lines"], counts["eval_lines"], counts["duplicates_dropped"],
           sum(f.row["empty_rows"] + f.row["non_text_rows"] for f in figures), stats["invalid_bytes_replaced"],
           time.time() - start)
    return stats


def _add_row(split: Splitter, row, to_eval: bool | None) -> None:
    figures = split.source.row
    figures["rows"] += 1
    if not isinstance(row, str):
        figures["non_text_rows"] += 1
        return
    if not row.strip():
        figures["empty_rows"] += 1
        return
    figures["characters"] += len(row)
    if "\n" in row or "\r" in row or len(row) > MAX_SEGMENT:
        for line in row.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            for piece in segments(line):
                split.add(piece, to_eval)
    else:
        split.add(row, to_eval)
    if len(split.source.lengths) >= 65536:
        split.source.flush()


def _move_to_eval(out: Path, line: str) -> None:
    train = out / "train.txt"
    kept = [t for t in train.read_text(encoding="utf-8").splitlines() if t != line]
    train.write_text("".join(t + "\n" for t in kept), encoding="utf-8")
    (out / "eval.txt").write_text(line + "\n", encoding="utf-8")
