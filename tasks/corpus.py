"""The corpus stage. `prepare_corpus`: user corpus sources (text files, JSON Lines, CSV / TSV, Parquet, Arrow,
saved datasets, dataset names in the local datasets cache) -> the engine's `lmcore.data.prepare` (normalise, drop
repeated documents, hash-chosen eval split) into a content-addressed folder of plain text, with statistics per
source. `describe_corpus`: those statistics with token counts as a table, on the MLflow parent run and as a Prefect
artifact. `fingerprint_corpus`: what a corpus folder holds now, as one content hash (the nightly flow trains only
when it changed).

Each file is read for hashing once per process (`lmcore.data.corpus.content_hash` remembers it by path, size and
modification time), so the cache key, the fingerprint and the statistics share one read.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.base.atomic import replace_folder, write_text
from lmcore.data.corpus import CorpusError, CorpusReading, content_hash, file_hash, resolve_files
from lmcore.data.prepare import PREP_VERSION, check_fraction, write_splits

from . import tracking
from .common import content_cache, digest, logger, pipeline_home

READING_ARGS = ("strict_utf8", "encoding", "use_hf_datasets", "data_format", "dataset_cache_dir", "text_column",
                "dataset_split", "dataset_config")
"""The LanguageModelingArgs fields that say how a corpus is read. The pipeline applies them when it prepares the
corpus; what it hands on to the engine is plain UTF-8 text, so they stop there (`engine_args`)."""


def reading_args(args: dict | None) -> dict:
    return {k: v for k, v in (args or {}).items() if k in READING_ARGS}


def engine_args(args: dict | None) -> dict:
    """`args` without the reading settings: the engine reads the prepared corpus, which is plain text."""
    return {k: v for k, v in (args or {}).items() if k not in READING_ARGS}


def corpus_reading(reading: dict | None) -> CorpusReading:
    from lmcore import LanguageModelingArgs

    return CorpusReading.from_args(LanguageModelingArgs.from_any(reading_args(reading)))


def _files(paths, reading: CorpusReading) -> list[Path]:
    return [] if paths is None else resolve_files(paths, reading.encoding, reading.cache_dir)


def corpus_key(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False,
               reading: dict | None = None) -> str:
    """Identity of a prepared corpus: the raw bytes of every input source and every setting that shapes the output
    (how the sources are read included: another text column is another corpus)."""
    check_fraction(eval_fraction, eval_corpus is not None)
    how = corpus_reading(reading)
    files, eval_files = _files(corpus, how), _files(eval_corpus, how)
    read_as = {**how.key(files + eval_files), **({"encoding": how.encoding} if how.encoding else {})}
    return digest(PREP_VERSION, content_hash(files), content_hash(eval_files) if eval_files else None,
                  None if eval_files else float(eval_fraction), bool(strict_utf8 or how.strict_utf8),
                  *([read_as] if read_as else []))[:24]


def _key_and_output(parameters: dict) -> tuple[str, Path]:
    key = corpus_key(parameters["corpus"], parameters.get("eval_corpus"), parameters.get("eval_fraction", 0.05),
                     parameters.get("strict_utf8", False), parameters.get("reading"))
    return key, pipeline_home() / "corpora" / key


@task(name="prepare_corpus", cache_key_fn=content_cache(_key_and_output), persist_result=True)
def prepare_corpus(corpus, eval_corpus=None, eval_fraction: float = 0.05, strict_utf8: bool = False,
                   reading: dict | None = None, parent_run_id: str | None = None) -> dict:
    """Normalise, drop exact duplicate documents, split off the eval set (a hash-chosen `eval_fraction` of the
    corpus, or all of `eval_corpus`); returns the folder and statistics (train/eval files under "train_file" and
    "eval_file", figures per source under "per_source").

    reading: the LanguageModelingArgs fields of READING_ARGS (text_column, dataset_split, dataset_config,
    dataset_cache_dir, encoding, use_hf_datasets + data_format, strict_utf8) that say how the sources are read."""
    key, out = _key_and_output(dict(corpus=corpus, eval_corpus=eval_corpus, eval_fraction=eval_fraction,
                                    strict_utf8=strict_utf8, reading=reading))
    if (out / "stats.json").exists():
        return _result(out)
    how = corpus_reading(reading)
    strict_utf8 = bool(strict_utf8 or how.strict_utf8)
    files, eval_files = _files(corpus, how), _files(eval_corpus, how)
    with tracking.child_run(parent_run_id, "prepare_corpus") as run_id:
        def fill(tmp: Path) -> None:
            stats = write_splits(files, eval_files, eval_fraction, strict_utf8, tmp, report=logger().info,
                                 reading=how)
            stats.update(key=key, content_hash=content_hash(files), eval_split="eval_corpus" if eval_files else
                         f"{eval_fraction:g} of the corpus", sources=[str(f) for f in files],
                         eval_sources=[str(f) for f in eval_files], reading=reading_args(reading),
                         train_hash=file_hash(tmp / "train.txt"))
            write_text(tmp / "stats.json", json.dumps(stats, indent=2))
            tracking.log_params(run_id, {f"corpus.{k}": v for k, v in stats.items()
                                         if not isinstance(v, (list, dict))})

        try:
            replace_folder(out, fill)  # an incomplete folder left by an interrupted run is replaced whole
        except CorpusError as e:  # the engine's message, saying where a pipeline user sets what it names
            from .inputs import in_pipeline_terms

            raise CorpusError(in_pipeline_terms(str(e))) from e
    return _result(out)


PROGRESS_LINES = 1_000_000
"""A progress line every this many documents counted."""
TABLE_COLUMNS = ("source", "container", "split", "rows", "empty_rows", "non_text_rows", "documents",
                 "duplicates_dropped", "train_lines", "eval_lines", "characters", "tokens", "invalid_bytes", "bytes",
                 "length_mean", "length_p50", "length_p90", "length_p99", "length_max")
"""The statistics table's columns: per source, what it held (rows, the empty and non-text ones), what was kept
(documents, and where they went), what was dropped, its size in characters and in tokens of the run's tokenizer,
and the length of its documents in characters."""


def token_counts(prep: dict, tokenizer) -> list[int]:
    """Tokens (special tokens not counted) of each source's kept documents, in `prep["per_source"]` order. A
    source's documents are one contiguous run of lines in train.txt and one in eval.txt (lmcore.data.prepare), so the
    prepared files are read once, in order, and each line's tokens go to the source whose run it falls in."""
    sources = prep["per_source"]
    counts = [0] * len(sources)
    total = sum(s["train_lines"] + s["eval_lines"] for s in sources)
    start, done, next_report = time.time(), 0, PROGRESS_LINES
    for split, file in (("train_lines", prep["train_file"]), ("eval_lines", prep["eval_file"])):
        ends = list(itertools.accumulate(s[split] for s in sources))  # line number after each source's run
        line_no, owner = 0, 0
        with open(file, encoding="utf-8") as f:
            while batch := [line.rstrip("\n") for line in itertools.islice(f, 4096)]:
                # verbose=False: no "sequence length is longer than the maximum" warning; a document is cut into
                # blocks later, so its length here is a count, not a model input
                for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
                    while owner < len(ends) - 1 and line_no >= ends[owner]:
                        owner += 1
                    counts[owner] += len(ids)
                    line_no += 1
                done += len(batch)
                if done >= next_report:  # a large corpus takes minutes: say how far, how fast, how long still
                    rate = done / max(time.time() - start, 1e-9)
                    logger().info("describe_corpus: %d/%d documents tokenized (%.0f/s, ETA %.0f s)", done, total,
                                  rate, (total - done) / rate)
                    next_report += PROGRESS_LINES
    return counts


def statistics_table(prep: dict, tokens: list[int] | None):
    """The per-source statistics as a pandas DataFrame (TABLE_COLUMNS), with a last row of totals."""
    import pandas as pd

    rows = [{**s, "tokens": None if tokens is None else tokens[i]} for i, s in enumerate(prep["per_source"])]
    frame = pd.DataFrame(rows).reindex(columns=list(TABLE_COLUMNS))
    summed = [c for c in TABLE_COLUMNS if c not in ("source", "container", "split") and not c.startswith("length")]
    total = {"source": "(all)", "container": ",".join(sorted(set(frame["container"]))), "split": "",
             **{c: frame[c].sum(min_count=1) for c in summed}, "length_max": frame["length_max"].max()}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


@task(name="describe_corpus", cache_policy=NO_CACHE)
def describe_corpus(prep: dict, tokenizer: str | None = None, parent_run_id: str | None = None) -> list[dict]:
    """The corpus statistics table (TABLE_COLUMNS, one row per source and a total), token counts by `tokenizer`
    (a folder; None: no token counts), logged with `mlflow.log_table` on the parent run (corpus_statistics.json)
    and published as the Prefect table artifact `corpus-statistics`. Token counts are kept beside the prepared
    corpus per tokenizer, so a cached corpus and tokenizer are not tokenized twice for it."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if not prep.get("per_source"):
        logger().warning("describe_corpus: %s was prepared without per-source figures", prep.get("dir"))
        return []
    tokens = None
    if tokenizer:
        from lmcore.data.tokenizer import fingerprint, load_tokenizer

        try:
            tok = load_tokenizer(tokenizer)
        except (OSError, ValueError) as e:  # a statistic: the run goes on without it
            logger().warning("describe_corpus: no token counts (%s has no tokenizer to load here: %s)", tokenizer, e)
        else:
            saved = Path(prep["dir"]) / f"tokens-{fingerprint(tok)}.json"
            if saved.exists():
                tokens = json.loads(saved.read_text())
            else:
                tokens = token_counts(prep, tok)
                write_text(saved, json.dumps(tokens))
    table = statistics_table(prep, tokens)
    if parent_run_id:
        tracking.client().log_table(parent_run_id, table, "corpus_statistics.json")
    records = json.loads(table.to_json(orient="records"))
    if TaskRunContext.get() is not None:
        create_table_artifact(key="corpus-statistics", table=records,
                              description=f"Corpus {prep.get('key')}: {len(prep.get('per_source', []))} source(s), "
                                          f"eval split {prep.get('eval_split')}")
    logger().info("corpus statistics (all %d columns: MLflow corpus_statistics.json, Prefect corpus-statistics):\n%s",
                  len(TABLE_COLUMNS), screen_table(table))
    return records


SCREEN_COLUMNS = {"source": "source", "rows": "rows", "documents": "documents", "tokens": "tokens",
                  "duplicates_dropped": "duplicates"}
"""The statistics a log line has room for (the artifact holds every column of TABLE_COLUMNS)."""


def screen_table(table) -> str:
    """The statistics table in a few columns for the flow log: each source by its file name (the full paths are
    in the artifact), counts with thousands separators."""
    small = table[list(SCREEN_COLUMNS)].rename(columns=SCREEN_COLUMNS)
    import pandas as pd

    small["source"] = [s if s == "(all)" else Path(str(s)).name or str(s) for s in small["source"]]
    for column in small.columns[1:]:
        small[column] = ["-" if pd.isna(v) else f"{int(v):,}" for v in small[column]]
    return small.to_string(index=False)


def tokenizer_key(prep: dict) -> str:
    """What a tokenizer trained on this prepared corpus depends on: the bytes of its train split. Two corpora that
    prepare into the same text (the same rows as .txt and as Parquet, say) share one tokenizer, trained once
    (a second training would give the same files: lmcore.data.tokenizer.train_repeatably)."""
    return prep.get("train_hash") or prep["key"]


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
