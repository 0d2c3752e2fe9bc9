"""prepare_corpus: user corpus files -> a clean, de-duplicated train split and eval split in a content-addressed
folder, with statistics.

Reading (files, directories, gzip, BOM, CRLF, invalid UTF-8, binary files, huge lines) is the engine's
`lmcore.corpus`, so the pipeline accepts and rejects exactly what the engine does. Each non-blank line is one
document. The eval split is chosen by a hash of each line's text, not by position or a random draw: the same line
always lands on the same side, so a corpus that grows keeps its old eval lines and runs stay comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import unicodedata
from pathlib import Path

from prefect import task

from lmcore.corpus import CorpusError, CorpusStats, content_hash, iter_lines, resolve_files

from . import tracking
from .common import content_cache, digest, logger, pipeline_home

PREP_VERSION = 1
"""Bump when the preparation changes what it writes, so old prepared folders are not reused."""
PROGRESS_BYTES = 50 << 20


def _files(paths) -> list[Path]:
    if paths is None:
        return []
    return resolve_files(paths)


def corpus_key(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False) -> str:
    """Identity of a prepared corpus: the raw bytes of every input file and every setting that shapes the output."""
    check_fraction(eval_fraction, eval_corpus)
    files, eval_files = _files(corpus), _files(eval_corpus)
    return digest(PREP_VERSION, content_hash(files), content_hash(eval_files) if eval_files else None,
                  None if eval_files else float(eval_fraction), bool(strict_utf8))[:24]


def check_fraction(eval_fraction: float, eval_corpus) -> None:
    if eval_corpus is None and not (isinstance(eval_fraction, (int, float)) and 0.0 < eval_fraction < 1.0):
        raise CorpusError(f"eval_fraction={eval_fraction!r}: must be between 0 and 1 (exclusive) when no "
                          "eval_corpus is given, so there is something to measure perplexity on")


def _key_and_output(parameters: dict) -> tuple[str, Path]:
    key = corpus_key(parameters["corpus"], parameters.get("eval_corpus"), parameters.get("eval_fraction", 0.05),
                     parameters.get("strict_utf8", False))
    return key, pipeline_home() / "corpora" / key


@task(name="prepare_corpus", cache_key_fn=content_cache(_key_and_output), persist_result=True)
def prepare_corpus(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False,
                   parent_run_id: str | None = None) -> dict:
    """Normalise, drop exact duplicate documents, split off the eval set; returns the folder and statistics
    (train/eval file paths under "train_file"/"eval_file")."""
    key, out = _key_and_output(dict(corpus=corpus, eval_corpus=eval_corpus, eval_fraction=eval_fraction,
                                    strict_utf8=strict_utf8))
    if (out / "stats.json").exists():
        return _result(out)
    files, eval_files = _files(corpus), _files(eval_corpus)
    with tracking.child_run(parent_run_id, "prepare_corpus") as run_id:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        stats = _write_splits(files, eval_files, eval_fraction, strict_utf8, tmp)
        stats.update(key=key, content_hash=content_hash(files),
                     sources=[str(f) for f in files], eval_sources=[str(f) for f in eval_files])
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        if out.exists():  # an incomplete folder left by an interrupted run
            shutil.rmtree(out)
        os.replace(tmp, out)
        tracking.log_params(run_id, {f"corpus.{k}": v for k, v in stats.items() if not isinstance(v, list)})
    return _result(out)


def corpus_ready(result: dict) -> bool:
    return (Path(result["dir"]) / "stats.json").exists() and Path(result["train_file"]).exists()


def _result(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    return {"dir": str(out), "train_file": str(out / "train.txt"), "eval_file": str(out / "eval.txt"), **stats}


def normalise(line: str) -> str:
    """NFC (so visually equal text is byte-equal and de-duplicates), no stray surrounding whitespace."""
    return unicodedata.normalize("NFC", line).strip()


class _Splitter:
    def __init__(self, eval_fraction: float | None, train, eval_):
        self.threshold = None if eval_fraction is None else int(eval_fraction * 2**64)
        self.train, self.eval = train, eval_
        self.seen: set[bytes] = set()
        self.counts = {"documents": 0, "duplicates_dropped": 0, "train_lines": 0, "eval_lines": 0}
        self.lowest: tuple[int, str] | None = None  # the train line nearest the eval side, for tiny corpora

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
        if to_eval is None and self.threshold is None:  # a separate eval corpus: every corpus line trains
            to_eval = False
        if to_eval is None:
            bucket = int.from_bytes(h[:8], "big")
            to_eval = bucket < self.threshold
            if not to_eval and (self.lowest is None or bucket < self.lowest[0]):
                self.lowest = (bucket, line)
        (self.eval if to_eval else self.train).write(line + "\n")
        self.counts["eval_lines" if to_eval else "train_lines"] += 1


def _write_splits(files, eval_files, eval_fraction, strict_utf8, out: Path) -> dict:
    log = logger()
    read = CorpusStats()
    start, next_report = time.time(), PROGRESS_BYTES
    with open(out / "train.txt", "w", encoding="utf-8") as train, open(out / "eval.txt", "w", encoding="utf-8") as ev:
        split = _Splitter(None if eval_files else eval_fraction, train, ev)
        for f in eval_files:
            for line in iter_lines(f, strict_utf8, read):
                split.add(line, to_eval=True)
        for f in files:
            for line in iter_lines(f, strict_utf8, read):
                split.add(line)
                if read.bytes >= next_report:
                    log.info("prepare_corpus: %d MB read, %d documents kept", read.bytes >> 20,
                             split.counts["documents"])
                    next_report += PROGRESS_BYTES
    counts = split.counts
    if counts["eval_lines"] == 0 and split.lowest is not None:
        _move_to_eval(out, split.lowest[1])
        counts["eval_lines"], counts["train_lines"] = 1, counts["train_lines"] - 1
    if counts["train_lines"] == 0:
        raise CorpusError(f"{', '.join(map(str, files))}: no text left for training after removing blank lines, "
                          "duplicates and the eval split")
    stats = {"files": read.files, "bytes": read.bytes, "lines": read.lines,
             "invalid_bytes_replaced": read.invalid_bytes_replaced, **counts,
             "train_bytes": (out / "train.txt").stat().st_size, "eval_bytes": (out / "eval.txt").stat().st_size}
    log.info("prepare_corpus: %d file(s), %d lines -> %d train / %d eval documents, %d duplicate(s) dropped, "
             "%d invalid byte(s) replaced (%.1fs)", stats["files"], stats["lines"], counts["train_lines"],
             counts["eval_lines"], counts["duplicates_dropped"], stats["invalid_bytes_replaced"], time.time() - start)
    return stats


def _move_to_eval(out: Path, line: str) -> None:
    """A corpus too small for its eval_fraction to pick anything: the one line nearest the cut goes to eval."""
    train = out / "train.txt"
    kept = [t for t in train.read_text(encoding="utf-8").splitlines() if t != line]
    train.write_text("".join(t + "\n" for t in kept), encoding="utf-8")
    (out / "eval.txt").write_text(line + "\n", encoding="utf-8")
