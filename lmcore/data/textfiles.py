"""Text files -> lines: the bottom of the data layer's readers (`containers` reads every other container through
them too). Plain or gzip files (by magic bytes), decoded line by line with a BOM dropped, CRLF and lone CR as line
ends, invalid bytes replaced and counted or an error with the byte offset, a line over MAX_SEGMENT characters cut
at whitespace. `CorpusError` and `CorpusStats` live here because these readers raise and fill them. Imports only
the standard library."""

from __future__ import annotations

import codecs
import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 1 << 20
MAX_SEGMENT = 1 << 20
"""Characters; a longer line is yielded in pieces of at most this size, cut at whitespace where there is some."""


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
    """Rows of JSON Lines, CSV, Parquet, Arrow or datasets whose text was empty or not a string."""


def open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def iter_lines(path: Path, strict_utf8: bool = False, stats: CorpusStats | None = None,
               encoding: str | None = None) -> Iterator[str]:
    """Yield the lines of one file (without line ends, blank lines included, long lines in pieces), decoded with
    `encoding` (a Python codec name; None: UTF-8)."""
    stats = stats if stats is not None else CorpusStats()
    yield from _lines(path, strict_utf8, stats, encoding, cut=True)


def decoded_lines(path: Path, strict_utf8: bool = False, stats: CorpusStats | None = None,
                  encoding: str | None = None) -> Iterator[str]:
    """The whole lines of a JSON Lines or CSV file, decoded as `iter_lines` decodes text (a line is never cut:
    a row is parsed whole). Only invalid bytes are counted into `stats`; the caller counts rows."""
    own = CorpusStats()
    yield from _lines(path, strict_utf8, own, encoding, cut=False)
    if stats is not None and own.invalid_bytes_replaced:
        stats.invalid_bytes_replaced += own.invalid_bytes_replaced
        stats.files_with_invalid_bytes.extend(own.files_with_invalid_bytes)


def _lines(path: Path, strict_utf8: bool, stats: CorpusStats, encoding: str | None, cut: bool) -> Iterator[str]:
    replaced = _Replacements(encoding or "utf-8")
    decoder = codecs.getincrementaldecoder(replaced.codec)(errors="strict")
    consumed = 0
    pending = ""
    first = True
    with open_binary(path) as f:
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
                if cut:
                    yield from segments(line)
                else:
                    yield line
                stats.lines += 1
            if final:
                break
            pending = tail + held
            while cut and len(pending) > MAX_SEGMENT:
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


def segments(line: str) -> Iterator[str]:
    """`line` in pieces of at most MAX_SEGMENT characters (itself when shorter)."""
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
