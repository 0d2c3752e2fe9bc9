"""Corpus sources -> texts, with every kind of bad input caught before any expensive work: the middle of the data
layer's one way down (`containers`: files and folders -> rows; `corpus`: resolve, check, hash, texts; `data`:
texts -> token blocks). Imports `containers` and `sample_corpus`, never `data` or anything above it.

A source is a text file (plain or gzip), a JSON Lines, CSV / TSV, Parquet or Arrow file, a folder written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a dataset name in the local `datasets` cache (all read
into rows by `lmcore.data.containers`), or the reserved value "sample" (`lmcore.data.sample_corpus`, made on first use).
`resolve_files` turns what a user passes (a file, a directory, a dataset name, a list of these) into sorted
sources and checks each one cheaply (exists, readable, not empty, not whitespace only, not binary; a Parquet
footer or Arrow header that opens). `iter_corpus` then checks every source against the settings
(`CorpusReading`, the one record of reading settings: the text column, the split, a JSON line that does not
parse) and only then streams the texts (`source_rows`, the one rows generator, and `source_texts` over it),
with bounded memory: text files line by line (gzip by its magic bytes, a BOM dropped, CRLF and lone CR as line
ends, bytes invalid in the file's encoding replaced and counted or, under `strict_utf8`, an error with the byte
offset, a line longer than `MAX_SEGMENT` characters cut at whitespace into pieces), other containers row by row
(rows whose text is empty or not a string are counted and skipped). The same text gives the same texts whatever
the container. `corpus_statistics` describes each source (rows, characters, duplicates, lengths).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import containers, sample_corpus
from .containers import (  # noqa: F401  CorpusError, CorpusStats, iter_lines, MAX_SEGMENT: this module's names too
    MAX_SEGMENT, READ_CHUNK, SKIPPED_NAMES, TABLE_KINDS, CorpusError, CorpusStats, DatasetRef, find_dataset,
    is_dataset_folder, iter_lines, kind_of, members, open_binary, quick_problem, segments)

log = logging.getLogger(__name__)

BINARY_PROBE = 8192


@dataclass(frozen=True)
class CorpusReading:
    """How sources become texts: every setting that changes what is read (LanguageModelingArgs' names in the
    comments)."""

    strict_utf8: bool = False
    encoding: str | None = None
    """Codec of text, JSON Lines and CSV files (None: UTF-8)."""
    data_format: str | None = None
    """Read every file in this format (use_hf_datasets + data_format); None: by extension."""
    cache_dir: str | None = None
    """The `datasets` cache dataset names are looked up in (dataset_cache_dir; None: datasets' default)."""
    text_column: str = "text"
    """The column (or JSON field) holding the text (text_column)."""
    split: str = "train"
    """The split of a DatasetDict or a cached dataset (dataset_split)."""
    config: str | None = None
    """The configuration of a cached dataset name (dataset_config; None: the only one cached)."""

    @classmethod
    def from_args(cls, args) -> "CorpusReading":
        """The reading settings of a LanguageModelingArgs (or anything with its field names)."""
        return cls(strict_utf8=bool(getattr(args, "strict_utf8", False)), encoding=getattr(args, "encoding", None),
                   data_format=args.data_format if getattr(args, "use_hf_datasets", False) else None,
                   cache_dir=getattr(args, "dataset_cache_dir", None),
                   text_column=getattr(args, "text_column", "text") or "text",
                   split=getattr(args, "dataset_split", "train") or "train",
                   config=getattr(args, "dataset_config", None))

    def key(self, files: list[Path]) -> dict:
        """What a cache key needs besides the files' contents: the containers other than plain text the files are
        read as, and the row settings that differ from the defaults. Empty for a corpus of text files, so caches
        built before containers were read keep their keys (and a .jsonl once read as text does not)."""
        kinds = sorted({kind_of(f, self.data_format) for f in files} - {"text"})
        if not kinds:
            return {}
        parts = {"containers": kinds, "column": self.text_column, "split": self.split, "config": self.config}
        return {k: v for k, v in parts.items() if v != {"column": "text", "split": "train"}.get(k)}

    def texts(self, files: list[Path], stats: CorpusStats | None = None) -> Iterator[str]:
        """Every source checked first, then the texts of each in order."""
        stats = stats if stats is not None else CorpusStats()
        check_sources(files, self)
        for f in files:
            yield from source_texts(f, self, stats)


def resolve_files(paths: str | os.PathLike | Iterable[str | os.PathLike], encoding: str | None = None,
                  dataset_cache_dir: str | None = None) -> list[Path]:
    """Expand `paths` into corpus sources and check each one; raise CorpusError listing every bad one. `encoding`:
    the files' codec, when not UTF-8 (UTF-16 and UTF-32 text is full of NUL bytes and is not binary). A path that
    does not exist may name a dataset in the `datasets` cache under `dataset_cache_dir` (None: its default),
    optionally with a split, `NAME[SPLIT]`; it comes back as a `DatasetRef`. "sample" ("sample[eval]"): the sample
    corpus's train (held-out) file, written on first use (lmcore.data.sample_corpus). A folder written by save_to_disk
    is one source; any other folder gives its files (sorted, hidden ones skipped)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise CorpusError("no corpus files given")
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        if sample_corpus.is_sample(raw):
            try:
                raw = sample_corpus.resolve(raw)
            except sample_corpus.SampleCorpusError as e:
                problems.append(str(e))
                continue
        if isinstance(raw, DatasetRef) and (raw.cache_root is not None or not dataset_cache_dir):
            files.append(raw)  # resolved before (a list handed back in): keep the cache it was found in
            continue
        p = raw if isinstance(raw, DatasetRef) else Path(raw)
        if isinstance(p, DatasetRef) or not p.exists():
            ref, problem = find_dataset(str(p), dataset_cache_dir)
            if ref is None:
                problems.append(f"{p}: {problem}")
            else:
                files.append(ref)
        elif p.is_dir():
            found = [p] if is_dataset_folder(p) else _files_in(p)
            if not found:
                problems.append(f"{p}: directory has no (non-hidden) files")
            _warn_mixed(p, found)
            files.extend(found)
        else:
            files.append(p)
    for f in files:
        problem = check_file(f, encoding)
        if problem:
            problems.append(f"{f}: {problem}")
    if problems:
        raise CorpusError("bad corpus input:\n  " + "\n  ".join(problems))
    return files


def _files_in(directory: Path) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(directory):
        saved = [d for d in dirs if not d.startswith(".") and is_dataset_folder(Path(root) / d)]
        out.extend(Path(root) / d for d in saved)  # a saved dataset is one source: its Arrow files are not text
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in saved)
        out.extend(Path(root) / n for n in sorted(names) if not n.startswith(".") and n not in SKIPPED_NAMES)
    return sorted(out)


def _warn_mixed(directory: Path, files: list[Path]) -> None:
    kinds = sorted({kind_of(f) for f in files})
    if len(kinds) > 1 and "text" in kinds:
        log.warning("%s mixes containers (%s): its files without a known extension (%s) are read as plain text",
                    directory, ", ".join(kinds), ", ".join(f.name for f in files if kind_of(f) == "text")[:200])


def check_file(path: Path, encoding: str | None = None) -> str | None:
    """The problem with one corpus source, or None. Reads only as far as it must (the first non-blank byte of a
    text file; the footer or header of a Parquet or Arrow file)."""
    try:
        if kind_of(path) in TABLE_KINDS:
            return quick_problem(path)
    except PermissionError:
        return "permission denied"
    wide = bool(encoding) and codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    try:
        with open_binary(path) as f:
            head = f.read(BINARY_PROBE)
            if not head:
                return "file is empty"
            nul = -1 if wide else head.find(b"\x00")
            if nul >= 0:
                return f"binary file (NUL byte at offset {nul}), not text"
            while not (head.decode(encoding, errors="ignore") if wide else head).strip():
                head = f.read(READ_CHUNK)
                if not head:
                    return "file contains only whitespace"
    except PermissionError:
        return "permission denied"
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        return f"cannot be read ({e})"
    return None


def iter_corpus(files: list[Path], strict_utf8: bool = False, stats: CorpusStats | None = None,
                encoding: str | None = None, data_format: str | None = None,
                dataset_cache_dir: str | None = None, *, text_column: str = "text", dataset_split: str = "train",
                dataset_config: str | None = None) -> Iterator[str]:
    """The texts of every source in order: lines of text files, the `text_column` of the others' rows (with
    `data_format`, every file is read in that format). Every source is checked before the first text is given."""
    reading = CorpusReading(strict_utf8, encoding, data_format, dataset_cache_dir, text_column, dataset_split,
                            dataset_config)
    yield from reading.texts(files, stats)


def source_rows(source: Path, reading: CorpusReading, stats: CorpusStats) -> Iterator:
    """The raw rows of one (checked) source, one at a time: a text file's lines (blank ones included, a huge line in
    pieces, streamed: never a batch of them in memory), the text column's values of any other container (None or
    a non-string where a row has no text). The one generator both preparation and training read a source with."""
    if kind_of(source, reading.data_format) == "text":
        yield from iter_lines(source, reading.strict_utf8, stats, reading.encoding)
        return
    for batch in containers.rows(source, reading, stats):
        yield from batch


def source_texts(source: Path, reading: CorpusReading, stats: CorpusStats) -> Iterator[str]:
    """The texts of one (checked) source: `source_rows`, where a container's rows whose text is not a non-blank
    string are skipped (counted in `stats.rows_skipped`) and a row longer than MAX_SEGMENT characters comes in
    pieces. A text file's blank lines stay (they add no tokens; the line reader counts them)."""
    text = kind_of(source, reading.data_format) == "text"
    for row in source_rows(source, reading, stats):
        if text:
            yield row
        elif not isinstance(row, str) or not row.strip():
            stats.rows_skipped += 1
        else:
            stats.lines += 1
            yield from segments(row)


_CHECKED: set = set()
"""(source stamp, reading) pairs already checked in this process: tokenizer training and feature building read
the same corpus, and a JSON Lines check parses every line."""


def check_sources(files: list[Path], reading: CorpusReading) -> None:
    """Raise one CorpusError listing every source that cannot be read under `reading` (missing column, corrupt
    Parquet or Arrow data, a JSON line that does not parse, an unknown split or configuration)."""
    problems = []
    for f in files:
        if containers.kind_of(f, reading.data_format) == "text":
            continue
        key = (_stamp(f), reading)
        if key in _CHECKED:
            continue
        try:
            containers.check(f, reading)
            _CHECKED.add(key)
        except CorpusError as e:
            problems.append(str(e))
    if problems:
        raise CorpusError("bad corpus input:\n  " + "\n  ".join(problems))


def iter_rows(path: Path, data_format: str, cache_dir: str | None = None, stats: CorpusStats | None = None,
              encoding: str | None = None) -> Iterator[str]:
    """The "text" column of one file read in `data_format` (text, csv, tsv, json, jsonl): `iter_corpus` with
    that format, kept for callers of the earlier reader."""
    if data_format not in containers.KIND_BY_FORMAT:
        raise CorpusError(f"{path}: data_format={data_format!r} is not one of "
                          f"{', '.join(containers.KIND_BY_FORMAT)}")
    yield from iter_corpus([path], False, stats, encoding, data_format, cache_dir)


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------

LENGTH_BINS = 1 << 20
"""Row lengths below this are counted in a histogram (exact percentiles in bounded memory); longer ones listed."""


def corpus_statistics(files: list[Path], reading=None) -> list[dict]:
    """One dict per source, in order: container, rows, empty_rows (blank or empty text), non_text_rows (null or
    not a string), characters, bytes (on disk), duplicates (rows whose exact text an earlier row of this or an
    earlier source already had: what exact de-duplication drops), invalid_bytes (replaced with U+FFFD),
    length_mean / length_p50 / length_p90 / length_p99 / length_max (characters per non-empty row).

    `reading`: a CorpusReading, or a LanguageModelingArgs (or a dict of its fields) whose reading settings apply.
    A text file's rows are its lines (a line over MAX_SEGMENT characters counts as its pieces). Memory: 8 bytes
    per non-empty row for the duplicate count, a fixed histogram for the lengths. Plain values, ready for
    `pandas.DataFrame(...)`."""
    if isinstance(reading, dict):
        from ..models.args import LanguageModelingArgs

        reading = LanguageModelingArgs.from_any(reading)
    if not isinstance(reading, CorpusReading):
        reading = CorpusReading() if reading is None else CorpusReading.from_args(reading)
    check_sources(files, reading)
    out, hashes = [], []
    for f in files:
        stats = CorpusStats()
        kind = containers.kind_of(f, reading.data_format)
        row = {"source": str(f), "container": kind, "rows": 0, "empty_rows": 0, "non_text_rows": 0,
               "characters": 0}
        bins, long_rows, own = np.zeros(LENGTH_BINS, dtype=np.int64), [], []
        for batch in containers.rows(f, reading, stats):
            strings = [t for t in batch if isinstance(t, str)]
            texts = [t for t in strings if t.strip()]
            row["rows"] += len(batch)
            row["non_text_rows"] += len(batch) - len(strings)
            row["empty_rows"] += len(strings) - len(texts)
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            row["characters"] += int(lengths.sum())
            counted = np.bincount(lengths[lengths < LENGTH_BINS])
            bins[:len(counted)] += counted
            long_rows.extend(lengths[lengths >= LENGTH_BINS].tolist())
            own.append(np.fromiter(map(hash, texts), dtype=np.int64, count=len(texts)))
        hashes.append(np.concatenate(own) if own else np.zeros(0, dtype=np.int64))
        row.update(bytes=sum(m.stat().st_size for m in members(f)), invalid_bytes=stats.invalid_bytes_replaced,
                   **_length_summary(bins, long_rows))
        out.append(row)
    for row, dups in zip(out, _duplicates(hashes)):
        row["duplicates"] = dups
    return out


def _length_summary(bins: np.ndarray, long_rows: list[int]) -> dict:
    n = int(bins.sum()) + len(long_rows)
    if not n:
        return {f"length_{k}": 0 for k in ("mean", "p50", "p90", "p99", "max")}
    cumulative = np.cumsum(bins)
    extra = sorted(long_rows)
    total = int((bins * np.arange(LENGTH_BINS)).sum()) + sum(extra)

    def nearest_rank(q: float) -> int:
        rank = max(1, int(np.ceil(q * n)))  # the smallest length with at least q of the rows at or below it
        if rank <= cumulative[-1]:
            return int(np.searchsorted(cumulative, rank))
        return extra[rank - int(cumulative[-1]) - 1]

    return {"length_mean": round(total / n, 2), "length_p50": nearest_rank(0.5), "length_p90": nearest_rank(0.9),
            "length_p99": nearest_rank(0.99), "length_max": nearest_rank(1.0)}


def _duplicates(hashes: list[np.ndarray]) -> list[int]:
    """Per source, its rows whose hash an earlier row (in corpus order) already had."""
    counts = np.array([len(h) for h in hashes], dtype=np.int64)
    if not counts.sum():
        return [0] * len(hashes)
    joined = np.concatenate(hashes)
    _, first = np.unique(joined, return_index=True)
    firsts = np.bincount(np.searchsorted(np.cumsum(counts), first, side="right"), minlength=len(hashes))
    return [int(c - k) for c, k in zip(counts, firsts)]


# ---------------------------------------------------------------------------------------------------------------
# Identity: content hashes
# ---------------------------------------------------------------------------------------------------------------

_FILE_HASHES: dict[tuple, str] = {}
"""(path, size, mtime_ns) -> SHA-256 of the file's bytes: each file is read for hashing once per process."""


def _stamp(f: Path) -> tuple:
    """(identity, size, newest mtime_ns) of a source: a file, or the files of a dataset folder or cached name."""
    if not isinstance(f, DatasetRef) and not f.is_dir():
        st = os.stat(f)
        return (str(Path(f).resolve()), st.st_size, st.st_mtime_ns)
    parts = [os.stat(m) for m in members(f)]
    identity = f"dataset:{f}" if isinstance(f, DatasetRef) else str(Path(f).resolve())
    return (identity, sum(p.st_size for p in parts), max((p.st_mtime_ns for p in parts), default=0))


def file_hash(f: Path) -> str:
    """SHA-256 of one source's bytes (of a dataset folder's or cached name's files, names included),
    remembered by (path, size, modification time)."""
    stamp = _stamp(f)
    if stamp not in _FILE_HASHES:
        h = hashlib.sha256()
        if isinstance(f, DatasetRef) or f.is_dir():
            for m in members(f):
                h.update(m.name.encode() + b"\x00" + file_hash(m).encode() + b"\x00")
        else:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(READ_CHUNK), b""):
                    h.update(block)
        _FILE_HASHES[stamp] = h.hexdigest()
    return _FILE_HASHES[stamp]


def known_file_hashes(files: list[Path]) -> dict[str, list]:
    """{path: [size, mtime_ns, sha256]} of files already hashed: what a launcher passes on to the processes it
    starts (`remember_file_hashes`), so the corpus is read for hashing once per run, not once per process."""
    out = {}
    for f in files:
        stamp = _stamp(f)
        out[stamp[0]] = [stamp[1], stamp[2], file_hash(f)]
    return out


def remember_file_hashes(known: dict[str, list]) -> None:
    """Adopt hashes computed by another process; one whose file has changed since (size or time) is ignored."""
    for path, (size, mtime_ns, digest) in (known or {}).items():
        _FILE_HASHES[(path, int(size), int(mtime_ns))] = digest


def content_hash(files: list[Path]) -> str:
    """SHA-256 over the sources' names (relative order) and their contents' hashes: the identity of a corpus for
    caching. Each file's bytes are read once per process (see `file_hash`)."""
    h = hashlib.sha256()
    for f in files:
        f = f if isinstance(f, Path) else Path(f)
        h.update(f.name.encode() + b"\x00" + file_hash(f).encode() + b"\x00")
    return h.hexdigest()
