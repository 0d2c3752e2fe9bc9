"""Corpus files -> lines of text, with every kind of bad input caught before any expensive work.

`resolve_files` turns what a user passes (a file, a directory, a list of either) into a sorted list of files and
checks each one cheaply (exists, readable, not empty, not whitespace only, not binary). `iter_lines` then streams a
file as text with bounded memory: gzip is detected by its magic bytes, a UTF-8 BOM is dropped, CRLF and lone CR
become line ends, invalid UTF-8 is replaced and counted (or raised with the byte offset under `strict_utf8`), and a
line longer than `MAX_SEGMENT` characters is cut at whitespace into pieces so one enormous line never sits in memory.
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


def resolve_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand `paths` into corpus files and check each one; raise CorpusError listing every bad one."""
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
        problem = check_file(f)
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


def check_file(path: Path) -> str | None:
    """The problem with one corpus file, or None. Reads only as far as it must (the first non-blank byte)."""
    try:
        with _open_binary(path) as f:
            head = f.read(BINARY_PROBE)
            if not head:
                return "file is empty"
            nul = head.find(b"\x00")
            if nul >= 0:
                return f"binary file (NUL byte at offset {nul}), not text"
            while not head.strip():
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


def iter_lines(path: Path, strict_utf8: bool = False, stats: CorpusStats | None = None) -> Iterator[str]:
    """Yield the lines of one file (without line ends, blank lines included, long lines in pieces)."""
    stats = stats if stats is not None else CorpusStats()
    replaced = _Replacements()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
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
            first = False
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
        log.warning("%s: %d invalid UTF-8 byte(s) replaced with U+FFFD (first at byte offset %d); "
                    "set strict_utf8=True to make this an error", path, replaced.count, replaced.first_offset)


class _Replacements:
    def __init__(self):
        self.count = 0
        self.first_offset = None


def _decode(decoder, chunk: bytes, final: bool, consumed: int, path: Path, strict: bool, replaced) -> str:
    buffered = len(decoder.getstate()[0])
    try:
        return decoder.decode(chunk, final=final)
    except UnicodeDecodeError as e:
        offset = consumed - buffered + e.start
        if strict:
            raise CorpusError(f"{path}: invalid UTF-8 at byte offset {offset} (strict_utf8=True)") from None
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
            out.append(good.decode("utf-8"))
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


def iter_corpus(files: list[Path], strict_utf8: bool = False, stats: CorpusStats | None = None) -> Iterator[str]:
    for f in files:
        yield from iter_lines(f, strict_utf8=strict_utf8, stats=stats)


def content_hash(files: list[Path]) -> str:
    """SHA-256 over the files' names (relative order) and raw bytes: the identity of a corpus for caching."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\x00")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(READ_CHUNK), b""):
                h.update(block)
        h.update(b"\x00")
    return h.hexdigest()
