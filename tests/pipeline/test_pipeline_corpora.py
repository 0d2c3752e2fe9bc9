"""The pipeline on corpora as users keep them: prepare_corpus gives the same prepared text for every container
(text, JSON Lines, CSV / TSV, Parquet, Arrow, saved datasets, a cached dataset name), its per-source statistics
become a table on the MLflow parent run, and the pretrain flow trains the same model from each container."""

from __future__ import annotations

import json

import pytest
from prefect.logging import disable_run_logger

from lmcore import ArgsError, CorpusError
from tests.engine.data.test_corpora import corpus_rows, write_containers
from tests.pipeline_support import TINY, isolate, prefect_test_home, write_lines

datasets = pytest.importorskip("datasets")

CONTAINERS = ("jsonl", "jsonl.gz", "csv", "tsv", "parquet", "arrow", "feather", "saved", "saved_dict", "name",
              "parquet folder")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-containers")
    return {"paths": write_containers(corpus_rows(), root / "c", root / "hf-cache"), "cache": str(root / "hf-cache")}


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def prepare(sources, corpus, **reading):
    from tasks.corpus import prepare_corpus

    with disable_run_logger():
        return prepare_corpus.fn(corpus=str(corpus), eval_fraction=0.1,
                                 reading={"dataset_cache_dir": sources["cache"], **reading})


@pytest.mark.parametrize("container", CONTAINERS)
def test_every_container_prepares_the_text_files_corpus(env, sources, container):
    paths = sources["paths"]
    text = prepare(sources, paths["txt"])
    other = prepare(sources, paths[container])
    assert other["key"] != text["key"]
    for split in ("train_file", "eval_file"):
        assert open(other[split], "rb").read() == open(text[split], "rb").read()
    for k in ("documents", "duplicates_dropped", "train_lines", "eval_lines"):
        assert other[k] == text[k], k
    per_source = other["per_source"]
    assert len(per_source) == (2 if container == "parquet folder" else 1)  # a folder's parts are its sources
    total = {k: sum(row[k] for row in per_source) for k in ("rows", "documents", "non_text_rows", "empty_rows")}
    assert total["rows"] == len(corpus_rows()) and total["documents"] == text["documents"]
    has_nulls = container in ("parquet", "arrow", "feather", "saved", "saved_dict", "name", "parquet folder",
                              "jsonl", "jsonl.gz")
    assert (total["non_text_rows"], total["empty_rows"]) == ((1, 2) if has_nulls else (0, 3))


def test_per_source_figures_duplicates_across_sources_and_multi_line_rows(env, sources, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sources["paths"]
    rows = ["first line of a row\nsecond line of it", "a plain document", "a plain document", "", None,
            "x" * 50]
    pq.write_table(pa.table({"body": pa.array(rows, pa.string())}), tmp_path / "extra.parquet")
    out = prepare(sources, tmp_path / "extra.parquet", text_column="body")
    (row,) = out["per_source"]
    assert row["container"] == "parquet" and row["rows"] == 6
    assert (row["empty_rows"], row["non_text_rows"], row["duplicates_dropped"]) == (1, 1, 1)
    assert row["documents"] == 4  # the two lines of the first row are two documents, as in a text file
    assert row["characters"] == sum(len(r) for r in rows if r)
    assert row["length_max"] == 50 and row["length_p50"] == 17  # of 16, 17, 19 and 50 characters
    prepared = open(out["train_file"]).read().splitlines() + open(out["eval_file"]).read().splitlines()
    assert sorted(prepared) == sorted(["first line of a row", "second line of it", "a plain document", "x" * 50])

    # Two sources of the same rows: the second one's documents are all duplicates of the first one's.
    from tasks.corpus import prepare_corpus

    with disable_run_logger():
        two = prepare_corpus.fn(corpus=[str(paths["txt"]), str(paths["jsonl"])], eval_fraction=0.1)
    first, second = two["per_source"]
    assert (first["container"], second["container"]) == ("text", "json")
    assert second["documents"] == 0 and second["duplicates_dropped"] == first["documents"] + first[
        "duplicates_dropped"]
    assert first["train_lines"] + first["eval_lines"] == two["train_lines"] + two["eval_lines"]


def test_reading_settings_shape_the_key_and_bad_containers_are_named_before_any_work(env, sources, tmp_path):
    from tasks.corpus import corpus_key

    paths = sources["paths"]
    base = corpus_key(str(paths["parquet"]), None, 0.1, False, {})
    assert corpus_key(str(paths["parquet"]), None, 0.1, False, {"text_column": "id"}) != base
    assert corpus_key(str(paths["txt"]), None, 0.1, False, {"text_column": "body"}) == \
        corpus_key(str(paths["txt"]), None, 0.1, False, {})  # a text file has no columns

    with pytest.raises(CorpusError, match=r"c\.parquet.*body"):
        prepare(sources, paths["parquet"], text_column="body")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(paths["parquet"].read_bytes()[:200])
    with pytest.raises(CorpusError, match="broken.parquet"):
        prepare(sources, broken)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 2"):
        prepare(sources, bad)
    with pytest.raises(CorpusError, match="not_a_dataset"):
        prepare(sources, "not_a_dataset")
    corpora = tmp_path / "pipeline" / "corpora"
    assert not corpora.exists() or not list(corpora.iterdir())  # nothing written, not even a temporary folder


def test_flow_parameters_accept_reading_settings_and_refuse_engine_only_ones(env, sources):
    from tasks.inputs import check_parameters, default_model_name

    paths = sources["paths"]
    args = check_parameters(str(paths["parquet"]), {"use_hf_datasets": True, "data_format": "text",
                                                    "text_column": "text", "encoding": "utf-8"})
    assert args["use_hf_datasets"] is True
    # A dataset name in a custom cache resolves with dataset_cache_dir, and names the cache when it is not there.
    check_parameters("my_corpus", {"dataset_cache_dir": sources["cache"]})
    with pytest.raises(CorpusError, match="my_corpus"):
        check_parameters("my_corpus", {})
    with pytest.raises(ArgsError, match="dataset_class"):
        check_parameters(str(paths["txt"]), {"dataset_class": "x.Y"})
    assert default_model_name(str(paths["parquet"]), "bert") == "c-bert"
    assert default_model_name("my_corpus[test]", "gpt2") == "my-corpus-gpt2"


def test_statistics_table_has_token_counts_and_lands_on_the_parent_run(env, sources, tmp_path):
    import transformers as hf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tasks import tracking
    from tasks.corpus import TABLE_COLUMNS, describe_corpus

    from tasks.corpus import prepare_corpus

    paths = sources["paths"]
    more = write_lines(tmp_path / "more.txt", ["a new line of text", "another one"])
    with disable_run_logger():
        prep = prepare_corpus.fn(corpus=[str(paths["txt"]), str(paths["parquet"]), str(more)], eval_fraction=0.1)
    tok_dir = tmp_path / "tok"
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([r for r in corpus_rows() if r], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    hf.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(str(tok_dir))
    tok = hf.AutoTokenizer.from_pretrained(str(tok_dir))

    parent = tracking.start_run("corpus-stats", "parent")
    with disable_run_logger():
        records = describe_corpus.fn(prep, str(tok_dir), parent_run_id=parent)
    tracking.end_run(parent, None)
    assert [r["source"] for r in records[:-1]] == [s["source"] for s in prep["per_source"]]
    assert list(records[0]) == list(TABLE_COLUMNS)
    kept = open(prep["train_file"]).read().splitlines() + open(prep["eval_file"]).read().splitlines()
    total = sum(len(tok(line, add_special_tokens=False)["input_ids"]) for line in kept)
    assert records[-1]["tokens"] == total and records[-1]["source"] == "(all)"
    assert records[1]["tokens"] == 0 and records[1]["documents"] == 0  # the Parquet copy: all duplicates
    assert records[2]["tokens"] == 7 and records[2]["documents"] == 2  # "a new line of text", "another one"
    assert records[0]["tokens"] == total - 7

    (tmp_path / "dl").mkdir()
    local = tracking.client().download_artifacts(parent, "corpus_statistics.json", str(tmp_path / "dl"))
    saved = json.loads(open(local).read())
    assert saved["columns"][:3] == ["source", "container", "split"] and len(saved["data"]) == 4
    # Counted once per tokenizer: the counts are kept beside the prepared corpus.
    assert len(list((tmp_path / "pipeline" / "corpora").glob("*/tokens-*.json"))) == 1


# ---- through the flow ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A Prefect test server, and the MLflow store and pipeline folder of this module."""
    with prefect_test_home(tmp_path_factory.mktemp("corpora-flow")) as tmp:
        yield tmp


@pytest.fixture(scope="module")
def text_run(home, sources):
    from flows.pretrain import pretrain

    return pretrain(corpus=str(sources["paths"]["txt"]), args={**TINY, "dataset_cache_dir": sources["cache"]},
                    eval_fraction=0.1, experiment="containers", register_as="containers-txt")


@pytest.mark.slow
@pytest.mark.parametrize("container", ["jsonl", "csv", "parquet folder", "saved_dict", "name"])
def test_the_pretrain_flow_trains_the_same_model_from_every_container(home, sources, text_run, container):
    from flows.pretrain import pretrain
    from tasks import tracking

    run = pretrain(corpus=str(sources["paths"][container]), args={**TINY, "dataset_cache_dir": sources["cache"]},
                   eval_fraction=0.1, experiment="containers", register_as=f"containers-{container.replace(' ', '-')}")
    assert open(run["corpus"]["train_file"], "rb").read() == open(text_run["corpus"]["train_file"], "rb").read()
    assert run["metrics"]["perplexity"] == pytest.approx(text_run["metrics"]["perplexity"], rel=1e-6)
    assert run["registered"]["version"] == "1"
    client = tracking.client()
    local = client.download_artifacts(run["mlflow_run_id"], "corpus_statistics.json", str(home / container))
    table = json.loads(open(local).read())
    total = dict(zip(table["columns"], table["data"][-1]))  # the last row sums the sources (a folder's parts)
    assert total["source"] == "(all)" and total["rows"] == len(corpus_rows()) and total["tokens"] > 0
    assert total["documents"] == run["corpus"]["documents"]


def test_token_counting_reports_progress(env, sources, monkeypatch):
    import logging

    import transformers as hf
    from tokenizers import Tokenizer, models

    from tasks import corpus as corpus_task

    prep = prepare(sources, sources["paths"]["txt"])
    tok = hf.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
                                     unk_token="[UNK]")
    seen: list[str] = []
    progress = logging.getLogger("corpus-progress")
    progress.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    progress.addHandler(handler)
    monkeypatch.setattr(corpus_task, "PROGRESS_LINES", 100)
    monkeypatch.setattr(corpus_task, "logger", lambda: progress)
    try:
        counts = corpus_task.token_counts(prep, tok)
    finally:
        progress.removeHandler(handler)
    documents = prep["train_lines"] + prep["eval_lines"]
    assert sum(counts) == documents  # no pre-tokenizer: one unknown token per document
    lines = [m for m in seen if "documents tokenized" in m]
    # Checked after each batch read (one per split file here): the last line says all of them are done.
    assert lines and "ETA" in lines[0] and lines[-1].startswith(f"describe_corpus: {documents}/{documents} documents")
