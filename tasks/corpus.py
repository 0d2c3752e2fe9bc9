"""The corpus stage. `prepare_corpus`: user corpus files -> the engine's `lmcore.prepare` (normalise, drop repeated
documents, hash-chosen eval split) into a content-addressed folder, with statistics. `fingerprint_corpus`: what a
corpus folder holds now, as one content hash (the nightly flow trains only when it changed).

Each file is read for hashing once per process (`lmcore.corpus.content_hash` remembers it by path, size and
modification time), so the cache key, the fingerprint and the statistics share one read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.corpus import content_hash, resolve_files
from lmcore.prepare import PREP_VERSION, check_fraction, write_splits

from . import tracking
from .common import content_cache, digest, logger, pipeline_home


def _files(paths) -> list[Path]:
    return [] if paths is None else resolve_files(paths)


def corpus_key(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False) -> str:
    """Identity of a prepared corpus: the raw bytes of every input file and every setting that shapes the output."""
    check_fraction(eval_fraction, eval_corpus is not None)
    files, eval_files = _files(corpus), _files(eval_corpus)
    return digest(PREP_VERSION, content_hash(files), content_hash(eval_files) if eval_files else None,
                  None if eval_files else float(eval_fraction), bool(strict_utf8))[:24]


def _key_and_output(parameters: dict) -> tuple[str, Path]:
    key = corpus_key(parameters["corpus"], parameters.get("eval_corpus"), parameters.get("eval_fraction", 0.05),
                     parameters.get("strict_utf8", False))
    return key, pipeline_home() / "corpora" / key


@task(name="prepare_corpus", cache_key_fn=content_cache(_key_and_output), persist_result=True)
def prepare_corpus(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False,
                   parent_run_id: str | None = None) -> dict:
    """Normalise, drop exact duplicate documents, split off the eval set (a hash-chosen `eval_fraction` of the
    corpus, or all of `eval_corpus`); returns the folder and statistics (train/eval files under "train_file" and
    "eval_file")."""
    key, out = _key_and_output(dict(corpus=corpus, eval_corpus=eval_corpus, eval_fraction=eval_fraction,
                                    strict_utf8=strict_utf8))
    if (out / "stats.json").exists():
        return _result(out)
    files, eval_files = _files(corpus), _files(eval_corpus)
    with tracking.child_run(parent_run_id, "prepare_corpus") as run_id:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        stats = write_splits(files, eval_files, eval_fraction, strict_utf8, tmp, report=logger().info)
        stats.update(key=key, content_hash=content_hash(files), eval_split="eval_corpus" if eval_files else
                     f"{eval_fraction:g} of the corpus", sources=[str(f) for f in files],
                     eval_sources=[str(f) for f in eval_files])
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


@task(name="fingerprint_corpus", cache_policy=NO_CACHE)
def fingerprint_corpus(corpus_dir: str) -> dict:
    """{"empty": no visible file in the folder, "hash": content hash of its files (None when empty), "files"}."""
    folder = Path(corpus_dir)
    if folder.is_dir() and not any(f.is_file() and not f.name.startswith(".") for f in folder.rglob("*")):
        logger().info("%s is empty: nothing to train on", corpus_dir)
        return {"empty": True, "hash": None, "files": 0}
    files = resolve_files(corpus_dir)
    return {"empty": False, "hash": content_hash(files), "files": len(files)}
