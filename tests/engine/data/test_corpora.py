"""Corpora as users keep them: JSON Lines, CSV / TSV, Parquet, Arrow, saved datasets and cached dataset names give
the features of the same text in a text file, whatever the worker count; bad input is named before any work."""

import csv
import gzip
import json
import multiprocessing
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers as hf

from lmcore import CorpusError, LanguageModelingArgs, LanguageModelingModel
from lmcore.data import features as data_module
from lmcore.data.containers import DatasetRef
from lmcore.data.corpus import content_hash, corpus_statistics, iter_corpus, resolve_files
from lmcore.data.features import features_for
from tests.conftest import OWN_PEAK_MB, ROOT, sample_lines, tiny_args

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
datasets = pytest.importorskip("datasets")
BLOCK = 64
ODD_ROWS = ['He said "NA", then left.', "tab\tinside", "café — naïve façade", "NA", "null", "", "   "]


def corpus_rows(n: int = 300) -> list:
    """Text rows, blank ones among them; None marks a row without text in the containers that have nulls."""
    rows = sample_lines("train.txt", n) + ODD_ROWS
    rows[5:5] = [None]
    return rows


# ---- the same rows in every container ---------------------------------------------------------------------------

def write_containers(rows: list, root, cache) -> dict:
    """{container: corpus path}; the text file has an empty line where a row has no text."""
    root.mkdir(parents=True, exist_ok=True)
    text = [r or "" for r in rows]
    out = {"txt": root / "c.txt"}
    out["txt"].write_text("\n".join(text) + "\n", encoding="utf-8")
    lines = "".join(json.dumps({"id": i, "text": r}) + "\n" for i, r in enumerate(rows))
    out["jsonl"] = root / "c.jsonl"
    out["jsonl"].write_text(lines, encoding="utf-8")
    out["jsonl.gz"] = root / "c.jsonl.gz"
    out["jsonl.gz"].write_bytes(gzip.compress(lines.encode()))
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        out[kind] = root / f"c.{kind}"
        with open(out[kind], "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter=delimiter)
            w.writerow(["id", "text"])
            w.writerows(enumerate(text))
    table = pa.table({"id": pa.array(range(len(rows)), pa.int64()), "text": pa.array(rows, pa.string())})
    out["parquet"] = root / "c.parquet"
    pq.write_table(table, out["parquet"], row_group_size=100)
    out["arrow"] = root / "c.arrow"
    with pa.ipc.new_stream(str(out["arrow"]), table.schema) as w:  # the layout datasets writes
        for batch in table.to_batches(max_chunksize=64):
            w.write_batch(batch)
    out["feather"] = root / "f.arrow"
    with pa.ipc.new_file(str(out["feather"]), table.schema) as w:  # the random-access file format
        w.write_table(table)
    dataset = datasets.Dataset(table)
    out["saved"] = root / "saved"
    dataset.save_to_disk(str(out["saved"]), max_shard_size="4KB")  # several Arrow shards
    out["saved_dict"] = root / "saved_dict"
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(3))}).save_to_disk(str(out["saved_dict"]))
    named = root / "my_corpus"
    named.mkdir()
    shutil.copy(out["parquet"], named / "train.parquet")
    datasets.load_dataset(str(named), cache_dir=str(cache))
    shutil.rmtree(named)  # from now on only the cache holds it
    out["name"] = "my_corpus"
    parts = root / "parts"
    parts.mkdir()
    pq.write_table(table.slice(0, 100), parts / "part-0000.parquet")
    pq.write_table(table.slice(100), parts / "part-0001.parquet")
    (parts / "_SUCCESS").write_bytes(b"")  # Spark's marker: not corpus text
    out["parquet folder"] = parts
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(sample_lines("train.txt", 2000), trainers.WordPieceTrainer(vocab_size=1000,
                                                                                        special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    folder = tmp_path_factory.mktemp("tok")
    hf.BertTokenizerFast(tokenizer_object=tok).save_pretrained(str(folder))
    return hf.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    root = tmp_path_factory.mktemp("containers")
    return {"paths": write_containers(corpus_rows(), root / "c", root / "hf-cache"), "cache": str(root / "hf-cache")}


def args_for(tmp_path, containers, **overrides) -> LanguageModelingArgs:
    return LanguageModelingArgs(cache_dir=str(tmp_path / "cache"), reprocess_input_data=False,
                                dataset_cache_dir=containers["cache"], **overrides)


def build(path, tokenizer, args):
    files = resolve_files(path, dataset_cache_dir=args.dataset_cache_dir)
    return features_for(files, tokenizer, args, BLOCK, build=True)


def same(a, b) -> bool:
    return (np.asarray(a.tokens).tobytes() == np.asarray(b.tokens).tobytes()
            and np.array_equal(np.asarray(a.offsets), np.asarray(b.offsets)))


@pytest.mark.parametrize("dataset_type", ["simple", "line_by_line", "text"])
def test_every_container_gives_the_features_of_the_text_file(tmp_path, tokenizer, containers, dataset_type):
    args = args_for(tmp_path, containers, dataset_type=dataset_type)
    paths = containers["paths"]
    reference = build(paths["txt"], tokenizer, args)
    assert len(reference) > 10
    for kind, path in paths.items():
        if kind == "parquet folder" and dataset_type == "text":
            continue  # two files are two documents
        features = build(path, tokenizer, args)
        assert same(features, reference), kind
        if kind != "txt":
            assert features.meta["rows_skipped"] == 3, kind  # None, "" and "   "
            assert features.path != reference.path  # another source, another cache entry
    assert build(f"{paths['saved_dict']}[test]", tokenizer, args).num_tokens < reference.num_tokens / 20


def test_worker_counts_give_identical_features_for_every_container(tmp_path, tokenizer, monkeypatch, caplog):
    monkeypatch.setattr(data_module, "ENCODE_BATCH_CHARS", 4096)  # many chunks from a small corpus
    root = tmp_path / "w"
    paths = write_containers(corpus_rows(1500), root, tmp_path / "hf-cache")
    containers = {"cache": str(tmp_path / "hf-cache")}
    digests = set()
    for kind, path in paths.items():
        built = {}
        for workers in (1, 2):
            caplog.clear()
            args = args_for(tmp_path / f"{kind}-{workers}", containers, process_count=workers)
            built[workers] = build(path, tokenizer, args)
            if workers == 2:
                assert any("2 tokenizing processes" in r.getMessage() for r in caplog.records), kind
        assert same(built[1], built[2]), kind
        digests.add(np.asarray(built[2].tokens).tobytes())
    assert len(digests) == 1 and not multiprocessing.active_children()


def test_reading_waits_for_a_slow_writer(tmp_path, tokenizer, containers, monkeypatch):
    """Memory stays flat when the writing side is slower than the workers (a CPU-starved reading process): the
    corpus is read at most a few chunks ahead of what has been written."""
    import time

    monkeypatch.setattr(data_module, "ENCODE_BATCH_CHARS", 512)
    counts = {"read": 0, "written": 0, "ahead": 0}
    text_chunks, cut_examples = data_module._text_chunks, data_module._cut_examples

    def counted_reading(*a, **k):
        for chunk in text_chunks(*a, **k):
            counts["read"] += 1
            yield chunk

    def slow_writing(chunks, *a, **k):
        def slowly():
            for chunk in chunks:
                counts["ahead"] = max(counts["ahead"], counts["read"] - counts["written"])
                time.sleep(0.004)
                counts["written"] += 1
                yield chunk
        return cut_examples(slowly(), *a, **k)

    monkeypatch.setattr(data_module, "_text_chunks", counted_reading)
    monkeypatch.setattr(data_module, "_cut_examples", slow_writing)
    args = args_for(tmp_path, containers, process_count=2)
    features = build(containers["paths"]["parquet"], tokenizer, args)
    assert counts["written"] > 50 and len(features) > 10
    assert counts["ahead"] <= data_module.AHEAD_PER_PROCESS * 2 + 1, counts


def test_each_container_trains_the_same_model_through_the_front_door(tmp_path, tokenizer, containers,
                                                                     monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", containers["cache"])  # the name's default cache
    paths = containers["paths"]
    losses = {}
    for kind in ("txt", "jsonl", "csv", "parquet", "arrow", "saved", "name"):
        # One saved vocabulary for all: the losses compare how the containers are read, not tokenizer trainings.
        args = tiny_args("bert", tmp_path / kind, max_steps=3, logging_steps=1, tokenizer_name=tokenizer.name_or_path)
        model = LanguageModelingModel("bert", None, args=args)
        model.train_model(str(paths[kind]))
        losses[kind] = model.training_details["train_loss"]
        assert np.isfinite(model.eval_model(str(paths[kind]))["perplexity"])
    assert all(v == losses["txt"] for v in losses.values()), losses
    # From scratch, the tokenizer is trained on the container's rows too.
    scratch = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path / "scratch", max_steps=1),
                                    train_files=str(paths["parquet folder"]))
    assert len(scratch.tokenizer) == 2000


def test_simple_transformers_data_format_reads_any_file_name(tmp_path, tokenizer, containers):
    csv_named_data = tmp_path / "corpus.data"
    shutil.copy(containers["paths"]["csv"], csv_named_data)
    hf_args = args_for(tmp_path, containers, use_hf_datasets=True, data_format="csv")
    assert same(build(csv_named_data, tokenizer, hf_args),
                build(containers["paths"]["txt"], tokenizer, args_for(tmp_path, containers)))


def test_text_column_split_and_config_choose_what_is_read(tmp_path, tokenizer, containers):
    root = tmp_path / "cols"
    root.mkdir()
    table = pa.table({"title": ["Alpha", "Beta"], "body": ["first body text", "second body text"]})
    pq.write_table(table, root / "t.parquet")
    got = list(iter_corpus(resolve_files(root / "t.parquet"), text_column="body"))
    assert got == ["first body text", "second body text"]
    by_title = build(root / "t.parquet", tokenizer, args_for(tmp_path, containers, text_column="title"))
    by_body = build(root / "t.parquet", tokenizer, args_for(tmp_path, containers, text_column="body"))
    assert by_title.path != by_body.path and by_title.num_tokens < by_body.num_tokens
    saved_dict = containers["paths"]["saved_dict"]
    assert len(list(iter_corpus(resolve_files(saved_dict), dataset_split="test"))) == 3
    with pytest.raises(CorpusError, match=r"saved_dict: no split 'dev' \(splits: train, test\)"):
        list(iter_corpus(resolve_files(saved_dict), dataset_split="dev"))

    # A second configuration of the cached name: which one must be said, and then it is read.
    cache = tmp_path / "two-configs"
    shutil.copytree(containers["cache"], cache)
    default = next((cache / "my_corpus").glob("default"))
    shutil.copytree(default, default.parent / "small")
    info = next((default.parent / "small").glob("*/*/dataset_info.json"))
    info.write_text(info.read_text().replace('"config_name": "default"', '"config_name": "small"'))
    ref = resolve_files("my_corpus", dataset_cache_dir=str(cache))
    with pytest.raises(CorpusError, match=r"my_corpus: .*multiple 'my_corpus' configurations.*default, small|"
                                          r"my_corpus: .*small, default"):
        list(iter_corpus(ref, dataset_cache_dir=str(cache)))
    assert len(list(iter_corpus(ref, dataset_cache_dir=str(cache), dataset_config="small"))) == len([r for r in corpus_rows() if r and r.strip()])


def test_sources_survive_a_trip_through_their_names(containers):
    for kind in ("saved", "saved_dict", "name", "parquet folder"):
        files = resolve_files(str(containers["paths"][kind]), dataset_cache_dir=containers["cache"])
        again = resolve_files([str(f) for f in files], dataset_cache_dir=containers["cache"])
        assert [str(f) for f in again] == [str(f) for f in files]
        assert content_hash(again) == content_hash(files)
    folder = resolve_files(containers["paths"]["parquet folder"])
    assert [f.name for f in folder] == ["part-0000.parquet", "part-0001.parquet"]
    name = resolve_files("my_corpus[train]", dataset_cache_dir=containers["cache"])
    assert isinstance(name[0], DatasetRef) and str(name[0]) == "my_corpus[train]"


# ---- bad input: named, before any work --------------------------------------------------------------------------

@pytest.fixture
def no_tokenizing(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tokenizing started before the corpus was checked")
    monkeypatch.setattr(data_module, "_encode_chunk", refuse)


def test_a_parquet_file_without_the_column_lists_the_columns(tmp_path, tokenizer, containers, no_tokenizing):
    good, bad = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["fine"]}), good)
    pq.write_table(pa.table({"content": ["x"], "id": [1]}), bad)
    with pytest.raises(CorpusError, match=r"b\.parquet: no 'text' column \(columns: content, id\)"):
        build([good, bad], tokenizer, args_for(tmp_path, containers))
    numbers = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(CorpusError, match=r"n\.parquet: column 'text' holds int64, not text"):
        build(numbers, tokenizer, args_for(tmp_path, containers))
    assert not list((tmp_path / "cache").glob("features/*/meta.json"))


def test_corrupt_parquet_and_arrow_files_are_named_by_resolve_files(tmp_path, containers):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all" * 10)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(containers["paths"]["parquet"].read_bytes()[:-100])
    not_arrow = tmp_path / "x.arrow"
    not_arrow.write_bytes(b"\x00" * 64)
    with pytest.raises(CorpusError) as e:
        resolve_files([garbage, cut, not_arrow])
    message = str(e.value)
    assert "garbage.parquet: not a readable Parquet file" in message
    assert "cut.parquet: not a readable Parquet file" in message
    assert "x.arrow: not a readable Arrow file" in message


def test_a_truncated_arrow_stream_is_an_error_before_any_work(tmp_path, tokenizer, containers, no_tokenizing):
    cut = tmp_path / "cut.arrow"
    cut.write_bytes(containers["paths"]["arrow"].read_bytes()[:-300])
    with pytest.raises(CorpusError, match=r"cut\.arrow: .*(corrupt|not a readable)"):
        build(cut, tokenizer, args_for(tmp_path, containers))


def test_a_json_line_that_does_not_parse_is_named_with_its_line_number(tmp_path, tokenizer, containers,
                                                                        no_tokenizing):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": "three",}\n{"text": "four"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl: line 4 is not valid JSON"):
        build(f, tokenizer, args_for(tmp_path, containers))
    array = tmp_path / "array.json"
    array.write_text('[{"text": "one"},\n {"text": "two"}]\n')
    with pytest.raises(CorpusError, match=r"array\.json: line 1 is not valid JSON .*one object per line"):
        build(array, tokenizer, args_for(tmp_path, containers))
    other = tmp_path / "other.jsonl"
    other.write_text('{"body": "x", "id": 1}\n{"body": "y", "id": 2}\n')
    with pytest.raises(CorpusError, match=r"other\.jsonl: no 'text' column \(columns: body, id\)"):
        build(other, tokenizer, args_for(tmp_path, containers))


def test_a_dataset_name_not_in_the_cache_names_the_name_and_the_cache(tmp_path, containers):
    with pytest.raises(CorpusError, match=r"not_cached_corpus: no such file or directory, nor a dataset named "
                                          r"'not_cached_corpus' in the datasets cache .*hf-cache.*never downloaded"):
        resolve_files("not_cached_corpus", dataset_cache_dir=containers["cache"])
    with pytest.raises(CorpusError, match=r"my_corpus\[validation\]: no split 'validation' .*splits: train\)"):
        list(iter_corpus(resolve_files("my_corpus[validation]", dataset_cache_dir=containers["cache"])))


def test_the_front_door_refuses_bad_containers_before_touching_output_dir(tmp_path, containers):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken}\n')
    args = tiny_args("bert", tmp_path, max_steps=2)
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        LanguageModelingModel("bert", None, args=args, train_files=str(bad))
    assert not os.path.exists(args["output_dir"])


# ---- rows without text, statistics ------------------------------------------------------------------------------

def test_statistics_per_source(tmp_path, containers):
    paths = containers["paths"]
    stats = corpus_statistics(resolve_files([paths["txt"], paths["jsonl"], paths["parquet"]]))
    txt, jsonl, parquet = stats
    lines = [r for r in corpus_rows() if r and r.strip()]
    lengths = np.array([len(r) for r in lines])
    assert txt["container"] == "text" and jsonl["container"] == "json" and parquet["container"] == "parquet"
    assert txt["rows"] == jsonl["rows"] == parquet["rows"] == len(corpus_rows())
    assert txt["empty_rows"] == 3 and txt["non_text_rows"] == 0  # the text file's empty line for the null row
    assert parquet["empty_rows"] == 2 and parquet["non_text_rows"] == 1
    assert txt["characters"] == parquet["characters"] == int(lengths.sum())
    within = len(lines) - len(set(lines))
    assert txt["duplicates"] == within and jsonl["duplicates"] == parquet["duplicates"] == len(lines)
    for q in (50, 90, 99):
        assert txt[f"length_p{q}"] == int(np.percentile(lengths, q, method="inverted_cdf"))
    assert txt["length_max"] == lengths.max() and txt["length_mean"] == pytest.approx(lengths.mean(), abs=0.01)
    assert parquet["bytes"] == paths["parquet"].stat().st_size and txt["invalid_bytes"] == 0


def test_invalid_utf8_in_rows_is_replaced_and_counted_or_refused(tmp_path, tokenizer, containers):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9 au lait"}\n{"text": "fine"}\n')
    values = pa.array([b"na\xefve text", b"fine"], pa.binary())
    broken = pa.Array.from_buffers(pa.string(), len(values), values.buffers())  # Parquet does not check UTF-8
    parquet = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": broken}), parquet)
    stats = corpus_statistics(resolve_files([jsonl, parquet]))
    assert [s["invalid_bytes"] for s in stats] == [1, 1]
    assert list(iter_corpus([parquet])) == ["na\ufffdve text", "fine"]
    with pytest.raises(CorpusError, match=r"bad\.parquet: invalid UTF-8 in row 0"):
        list(iter_corpus([parquet], strict_utf8=True))
    with pytest.raises(CorpusError, match=r"bad\.jsonl: invalid UTF-8 at byte offset 13"):
        list(iter_corpus([jsonl], strict_utf8=True))


# ---- memory ------------------------------------------------------------------------------------------------------

PEAK_RSS_SCRIPT = """
import json, resource, sys
import transformers as hf
from lmcore.data.corpus import resolve_files
from lmcore.data.features import load_features
tok = hf.AutoTokenizer.from_pretrained(sys.argv[2])
f = load_features(resolve_files(sys.argv[1]), tok, "simple", 128, sys.argv[3], process_count=2)
peak = OWN_PEAK_MB
print(json.dumps({"tokens": f.num_tokens, "self": peak,
                  "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""".replace("OWN_PEAK_MB", OWN_PEAK_MB)


def write_parquet(path, megabytes: float) -> None:
    import random

    lines = sample_lines("train.txt")
    rng, size = random.Random(0), 0
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as w:
        while size < megabytes * 2**20:
            docs = ["\n".join(rng.choices(lines, k=10)) for _ in range(2000)]
            size += sum(map(len, docs))
            w.write_table(pa.table({"id": range(len(docs)), "text": docs}))


@pytest.mark.slow
def test_peak_memory_of_a_large_parquet_preparation_does_not_grow_with_it(tmp_path, tokenizer):
    import subprocess
    import sys

    tokenizer.save_pretrained(str(tmp_path / "tok"))
    peaks = {}
    for mb in (8, 300):
        path = tmp_path / f"c{mb}.parquet"
        write_parquet(path, mb)
        out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(path), str(tmp_path / "tok"),
                              str(tmp_path / "cache")], capture_output=True, text=True, check=True, cwd=ROOT)
        peaks[mb] = json.loads(out.stdout.strip().splitlines()[-1])
        path.unlink()
    assert peaks[300]["tokens"] > 25 * peaks[8]["tokens"]
    for who in ("self", "workers"):  # the reading process, and the largest tokenizing worker
        assert peaks[300][who] < 1200, peaks
        assert peaks[300][who] - peaks[8][who] < 150, peaks
