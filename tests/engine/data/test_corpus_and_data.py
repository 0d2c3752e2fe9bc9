"""Corpus input of every awkward kind, the three dataset types, batching and the cased vocabulary."""

import gzip
import logging

import numpy as np
import pytest

from lmcore import CorpusError, LanguageModelingModel
from lmcore.data.corpus import MAX_SEGMENT, CorpusStats, iter_corpus, iter_lines, resolve_files
from lmcore.data.batches import collate, epoch_batches
from lmcore.data.features import load_features
from tests.conftest import sample_lines, tiny_args


def lines_of(path, **kw):
    return list(iter_lines(path, **kw))


@pytest.mark.parametrize("content, problem", [
    (b"", "file is empty"), (b"  \n\t\n \r\n", "only whitespace"), (b"text\x00\x01binary", r"binary file \(NUL")])
def test_unusable_files_are_named_with_their_problem(tmp_path, content, problem):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(CorpusError, match=problem) as e:
        resolve_files(str(f))
    assert str(f) in str(e.value)


def test_every_bad_file_is_reported_at_once(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CorpusError) as e:
        resolve_files([str(tmp_path / "missing.txt"), str(tmp_path / "empty.txt")])
    assert "missing.txt: no such file" in str(e.value) and "empty.txt: file is empty" in str(e.value)


def test_directory_is_read_in_sorted_order_skipping_hidden_files(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("bee\n")
    (d / "a.txt").write_text("ay\n")
    (d / "sub" / "c.txt").write_text("sea\n")
    (d / ".hidden.txt").write_text("secret\n")
    (d / ".git").mkdir()
    (d / ".git" / "x.txt").write_text("git\n")
    files = resolve_files(str(d))
    assert [f.name for f in files] == ["a.txt", "b.txt", "c.txt"]
    assert list(iter_corpus(files)) == ["ay", "bee", "sea"]


def test_gzip_bom_and_line_ends_are_handled(tmp_path):
    gz = tmp_path / "corpus.txt.gz"
    gz.write_bytes(gzip.compress("\ufefffirst line\r\nsecond\rthird\nlast".encode()))
    plain = tmp_path / "plain"  # gzip is detected by magic bytes, not the name
    plain.write_bytes(gz.read_bytes())
    assert lines_of(gz) == lines_of(plain) == ["first line", "second", "third", "last"]


def test_crlf_split_across_read_chunks(tmp_path, monkeypatch):
    import lmcore.data.containers as containers

    monkeypatch.setattr(containers, "READ_CHUNK", 4)
    f = tmp_path / "c.txt"
    f.write_bytes(b"abc\r\ndef\r\nghi\xc3\xa9\r\n")  # \r at a chunk end, é split across chunks
    assert lines_of(f) == ["abc", "def", "ghi\u00e9"]


def test_invalid_utf8_is_replaced_counted_and_warned(tmp_path, caplog):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9 ok\nna\xefve\n")  # Latin-1 bytes in a UTF-8 file
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING):
        got = list(iter_lines(f, stats=stats))
    assert got == ["caf\ufffd ok", "na\ufffdve"]
    assert stats.invalid_bytes_replaced == 2 and stats.files_with_invalid_bytes == [str(f)]
    assert any(str(f) in r.message and "offset 3" in r.message for r in caplog.records)


def test_strict_utf8_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"good line\nbad \xff here\n")
    with pytest.raises(CorpusError, match=r"bad\.txt: invalid UTF-8 at byte offset 14"):
        lines_of(f, strict_utf8=True)


def test_one_enormous_line_is_cut_into_bounded_pieces(tmp_path):
    f = tmp_path / "huge.txt"
    words = ("word " * (MAX_SEGMENT // 2)).encode()  # 2.5 MAX_SEGMENT characters on one line
    f.write_bytes(words)
    pieces = lines_of(f)
    assert len(pieces) >= 3 and max(map(len, pieces)) <= MAX_SEGMENT
    assert sum(p.count("word") for p in pieces) == MAX_SEGMENT // 2  # no word lost or split


def test_simple_blocks_are_full_and_line_by_line_keeps_lines(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 400)) + "\n\n\n")
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=str(train))
    tok, block = model.tokenizer, model.block_size()
    simple = load_features([train], tok, "simple", block, str(tmp_path / "c"))
    lengths = simple.lengths()
    assert (lengths[:-1] == block).all() and lengths[-1] <= block  # only the last block may be short
    first = simple.example(0)
    assert first[0] == tok.cls_token_id and first[-1] == tok.sep_token_id

    lbl = load_features([train], tok, "line_by_line", block, str(tmp_path / "c"))
    assert len(lbl) == 400  # one example per non-empty line
    assert lbl.lengths().max() <= block

    # Batches of similar-length lines waste little padding; random batches waste a lot.
    def padding(group):
        pad = real = 0
        for b in epoch_batches(lbl, 16, seed=1, epoch=0, group_by_length=group):
            mask = collate(lbl, b, 0)["attention_mask"]
            pad += int((mask == 0).sum())
            real += int(mask.sum())
        return pad / (pad + real)
    assert padding(True) < 0.10 < padding(False)


def test_text_dataset_keeps_files_apart(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(3):
        (d / f"doc{i}.txt").write_text("\n".join(sample_lines("train.txt")[i * 5:(i + 1) * 5]) + "\n")
    model = LanguageModelingModel("gpt2", None, args=tiny_args("gpt2", tmp_path), train_files=str(d))
    feats = load_features(resolve_files(str(d)), model.tokenizer, "text", 64, str(tmp_path / "c"))
    joined = load_features(resolve_files(str(d)), model.tokenizer, "simple", 64, str(tmp_path / "c"))
    assert feats.num_tokens == joined.num_tokens
    assert (feats.lengths() < 64).sum() == 3  # each document ends in its own short block


def test_data_order_is_a_function_of_seed_and_epoch_and_ranks_partition_it(tmp_path):
    train = tmp_path / "t.txt"
    train.write_text("\n".join(sample_lines("train.txt", 300)) + "\n")
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=str(train))
    feats = load_features([train], model.tokenizer, "simple", 32, str(tmp_path / "c"))
    one = epoch_batches(feats, 4, seed=3, epoch=0)
    assert [b.tolist() for b in one] == [b.tolist() for b in epoch_batches(feats, 4, seed=3, epoch=0)]
    assert [b.tolist() for b in one] != [b.tolist() for b in epoch_batches(feats, 4, seed=3, epoch=1)]
    r0 = epoch_batches(feats, 4, seed=3, epoch=0, rank=0, world=2)
    r1 = epoch_batches(feats, 4, seed=3, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) and all(len(b) > 0 for b in r0 + r1)
    seen = np.concatenate(r0 + r1)
    assert set(seen.tolist()) == set(range(len(feats)))


def test_feature_cache_is_reused_and_keyed_by_content(tmp_path):
    train = tmp_path / "t.txt"
    train.write_text("\n".join(sample_lines("train.txt", 200)) + "\n")
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=str(train))
    a = load_features([train], model.tokenizer, "simple", 64, str(tmp_path / "c"))
    b = load_features([train], model.tokenizer, "simple", 64, str(tmp_path / "c"))
    assert a.path == b.path
    train.write_text("\n".join(sample_lines("train.txt", 201)) + "\n")
    c = load_features([train], model.tokenizer, "simple", 64, str(tmp_path / "c"))
    assert c.path != a.path and c.num_tokens > a.num_tokens


@pytest.mark.parametrize("lower", [False, True])
def test_vocabulary_case_follows_do_lower_case(tmp_path, lower):
    train = tmp_path / "t.txt"
    train.write_text("\n".join(sample_lines("train.txt", 800)) + "\n")
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, do_lower_case=lower),
                                  train_files=str(train))
    tok = model.tokenizer
    vocab = tok.get_vocab()
    has_capitals = any(t.isalpha() and t != t.lower() for t in vocab)
    assert has_capitals is (not lower)
    same = tok("Return")["input_ids"] == tok("return")["input_ids"]
    assert same is lower
    assert tok.unk_token_id not in tok("Return the Python object")["input_ids"]
