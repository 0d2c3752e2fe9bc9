"""Corpus files -> lines of text, with every kind of bad input caught before any expensive work.

`resolve_files` turns what a user passes (a file, a directory, a list of either) into a sorted list of files and
checks each one cheaply (exists, readable, not empty, not whitespace only, not binary). `iter_lines` then streams a
file as text with bounded memory: gzip is detected by its magic bytes, a BOM is dropped, CRLF and lone CR become
line ends, bytes invalid in the file's encoding (UTF-8 unless told otherwise) are replaced and counted (or raised with
the byte offset under `strict_utf8`), and a line longer than `MAX_SEGMENT` characters is cut at whitespace into
pieces so one enormous line never sits in memory. `iter_rows` reads the "text" column of a CSV / TSV / JSON Lines
file (or the lines of a text file) through `datasets` instead, for corpora kept in those containers.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 1 << 20
MAX_SEGMENT = 1 << 20
"""Characters; a longer line is yielded in pieces of at most this size, cut at whitespace where there is some."""
BINARY_PROBE = 8192


class CorpusError(ValueError):
    """A corpus file cannot be used; the message names the file and the problem."""


@dataclass
class CorpusStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    invalid_bytes_replaced: int = 0
    files_with_invalid_bytes: list = field(default_factory=list)
    rows_skipped: int = 0
    """Rows read through `datasets` whose text was empty or not a string."""


def resolve_files(paths: str | os.PathLike | Iterable[str | os.PathLike], encoding: str | None = None) -> list[Path]:
    """Expand `paths` into corpus files and check each one; raise CorpusError listing every bad one. `encoding`:
    the files' codec, when not UTF-8 (UTF-16 and UTF-32 text is full of NUL bytes and is not binary)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise CorpusError("no corpus files given")
    files: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        if not p.exists():
            problems.append(f"{p}: no such file or directory")
        elif p.is_dir():
            found = _files_in(p)
            if not found:
                problems.append(f"{p}: directory has no (non-hidden) files")
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
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return sorted(out)


def check_file(path: Path, encoding: str | None = None) -> str | None:
    """The problem with one corpus file, or None. Reads only as far as it must (the first non-blank byte)."""
    wide = bool(encoding) and codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    try:
        with _open_binary(path) as f:
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


def _open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def iter_lines(path: Path, strict_utf8: bool = False, stats: CorpusStats | None = None,
               encoding: str | None = None) -> Iterator[str]:
    """Yield the lines of one file (without line ends, blank lines included, long lines in pieces), decoded with
    `encoding` (a Python codec name; None: UTF-8)."""
    stats = stats if stats is not None else CorpusStats()
    replaced = _Replacements(encoding or "utf-8")
    decoder = codecs.getincrementaldecoder(replaced.codec)(errors="strict")
    consumed = 0
    pending = ""
    first = True
    with _open_binary(path) as f:
        while True:
            chunk = f.read(READ_CHUNK)
            final = not chunk
            text = _decode(decoder, chunk, final, consumed, path, strict_utf8, replaced)
            consumed += len(chunk)
            if first and text.startswith("\ufeff"):
                text = text[1:]
            first = first and not text
            text = pending + text
            held = ""  # a CR at the end of a chunk may be the first half of a CRLF
            if not final and text.endswith("\r"):
                text, held = text[:-1], "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            parts = text.split("\n")
            tail = parts.pop()
            if final:
                if tail:
                    parts.append(tail)
                tail = ""
            for line in parts:
                yield from _segments(line)
                stats.lines += 1
            if final:
                break
            pending = tail + held
            while len(pending) > MAX_SEGMENT:
                piece, pending = _cut(pending)
                yield piece
    stats.files += 1
    stats.bytes += consumed
    if replaced.count:
        stats.invalid_bytes_replaced += replaced.count
        stats.files_with_invalid_bytes.append(str(path))
        log.warning("%s: %d invalid %s byte(s) replaced with U+FFFD (first at byte offset %d); "
                    "set strict_utf8=True to make this an error", path, replaced.count, replaced.name,
                    replaced.first_offset)


class _Replacements:
    def __init__(self, encoding: str):
        self.codec = codecs.lookup(encoding).name
        self.name = "UTF-8" if self.codec == "utf-8" else encoding  # messages use the name the user gave
        self.count = 0
        self.first_offset = None


def _decode(decoder, chunk: bytes, final: bool, consumed: int, path: Path, strict: bool, replaced) -> str:
    buffered = len(decoder.getstate()[0])
    try:
        return decoder.decode(chunk, final=final)
    except UnicodeDecodeError as e:
        offset = consumed - buffered + e.start
        if strict:
            raise CorpusError(f"{path}: invalid {replaced.name} at byte offset {offset} (strict_utf8=True)") from None
    # Decode this chunk again, replacing each bad sequence and counting the bytes replaced.
    data = decoder.getstate()[0] + chunk
    decoder.reset()
    out, pos = [], 0
    while True:
        try:
            out.append(decoder.decode(data[pos:], final=final))
            return "".join(out)
        except UnicodeDecodeError as e:
            good = data[pos:pos + e.start]
            out.append(good.decode(replaced.codec))
            decoder.reset()
            if replaced.first_offset is None:
                replaced.first_offset = consumed - buffered + pos + e.start
            replaced.count += e.end - e.start
            out.append("\ufffd")
            pos += e.end


def _segments(line: str) -> Iterator[str]:
    while len(line) > MAX_SEGMENT:
        piece, line = _cut(line)
        yield piece
    yield line


def _cut(text: str) -> tuple[str, str]:
    """Split off a first piece of at most MAX_SEGMENT characters, at the last whitespace if there is one."""
    cut = text.rfind(" ", MAX_SEGMENT // 2, MAX_SEGMENT)
    if cut <= 0:
        cut = MAX_SEGMENT
    return text[:cut], text[cut:].lstrip(" ")


def iter_corpus(files: list[Path], strict_utf8: bool = False, stats: CorpusStats | None = None,
                encoding: str | None = None, data_format: str | None = None,
                dataset_cache_dir: str | None = None) -> Iterator[str]:
    """The texts of every file in order: their lines, or with `data_format` the rows `iter_rows` reads."""
    for f in files:
        if data_format is not None:
            yield from iter_rows(f, data_format, dataset_cache_dir, stats, encoding)
        else:
            yield from iter_lines(f, strict_utf8=strict_utf8, stats=stats, encoding=encoding)


_HF_BUILDERS = {"text": ("text", {}), "csv": ("csv", {}), "tsv": ("csv", {"delimiter": "\t"}),
                "json": ("json", {}), "jsonl": ("json", {})}
ROWS_PER_READ = 1000


def iter_rows(path: Path, data_format: str, cache_dir: str | None = None, stats: CorpusStats | None = None,
              encoding: str | None = None) -> Iterator[str]:
    """Yield the "text" column of one file read by `datasets` in `data_format` (text, csv, tsv, json, jsonl).

    `datasets` converts the file to Arrow once (cached under `cache_dir`) and the rows are then read a thousand
    at a time from the memory-mapped table, so memory stays flat however large the file. Rows that are empty or
    not strings are skipped and counted; a row longer than MAX_SEGMENT characters is yielded in pieces.
    """
    import datasets

    stats = stats if stats is not None else CorpusStats()
    if data_format not in _HF_BUILDERS:
        raise CorpusError(f"{path}: data_format={data_format!r} is not one of {', '.join(_HF_BUILDERS)}")
    builder, options = _HF_BUILDERS[data_format]
    if builder == "csv":
        options = {**options, "na_filter": False}  # a row reading "NA" or "null" is text, not a missing value
    if encoding:
        options = {**options, "encoding": encoding}
    try:
        table = datasets.load_dataset(builder, data_files=[str(path)], split="train", cache_dir=cache_dir, **options)
    except Exception as e:  # datasets raises many types for unreadable files; name the file whatever it was
        raise CorpusError(f"{path}: cannot be read as {data_format} by datasets ({type(e).__name__}: {e})") from e
    if "text" not in table.column_names:
        raise CorpusError(f"{path}: no 'text' column to read (columns: {', '.join(table.column_names) or 'none'})")
    first = True
    for batch in table.select_columns(["text"]).iter(batch_size=ROWS_PER_READ):
        for row in batch["text"]:
            if first and isinstance(row, str):  # text files keep a BOM in their first row; the plain reader drops it
                row, first = row.removeprefix("\ufeff"), False
            if not isinstance(row, str) or not row.strip():
                stats.rows_skipped += 1
                continue
            stats.lines += 1
            yield from _segments(row)
    stats.files += 1
    stats.bytes += path.stat().st_size


_FILE_HASHES: dict[tuple, str] = {}
"""(path, size, mtime_ns) -> SHA-256 of the file's bytes: each file is read for hashing once per process."""


def _stamp(f: Path) -> tuple:
    st = os.stat(f)
    return (str(Path(f).resolve()), st.st_size, st.st_mtime_ns)


def file_hash(f: Path) -> str:
    """SHA-256 of one file's bytes, remembered by (path, size, modification time)."""
    stamp = _stamp(f)
    if stamp not in _FILE_HASHES:
        h = hashlib.sha256()
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
    """SHA-256 over the files' names (relative order) and their contents' hashes: the identity of a corpus for
    caching. Each file's bytes are read once per process (see `file_hash`)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\x00" + file_hash(Path(f)).encode() + b"\x00")
    return h.hexdigest()
