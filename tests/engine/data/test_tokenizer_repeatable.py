"""Two trainings of a tokenizer on the same text with the same settings write the same files and give the same ids.

Each training gets its own cache folder, so the content-keyed cache cannot hand the first result to the second.
The tokenizers trainer numbers WordPiece's "##x" pieces (and a suffixed BPE's "x</w>") in the order of an internal
hash table that changes from one table to the next, even within one process: without lmcore.data.tokenizer's fix these
tests see other ids, and at larger vocabularies other tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import sample_lines
from lmcore import LanguageModelingModel
from lmcore.models.args import LanguageModelingArgs
from lmcore.models.registry import get_model_type
from lmcore.data.tokenizer import train_tokenizer

PROBE = ["The function returns a new list of the items, sorted by their keys.",
         "Unlike ##this line, raise an exception</w> if the object is not callable."]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repeatable") / "train.txt"
    path.write_text("\n".join(sample_lines("train.txt", 1500)) + "\n")
    return path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt")


def _files(folder: Path) -> dict[str, bytes]:
    """The tokenizer files under `folder` (subfolders too), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.name in TOKENIZER_FILES}


@pytest.mark.parametrize("model_type", ["bert", "roberta", "openai-gpt"])  # WordPiece, byte-level BPE, BPE + </w>
def test_two_trainings_write_identical_files(model_type, text_file, tmp_path):
    runs = []
    for name in ("first", "second"):
        args = LanguageModelingArgs(vocab_size=2000, min_frequency=2, cache_dir=str(tmp_path / name))
        tok = train_tokenizer(get_model_type(model_type), [text_file], args, 64)
        folder = Path(tok.name_or_path)
        assert folder.is_relative_to(tmp_path / name)  # trained, not found in the other run's cache
        runs.append((_files(folder), tok.get_vocab(), tok(PROBE)["input_ids"]))
    (files_a, vocab_a, ids_a), (files_b, vocab_b, ids_b) = runs
    assert "tokenizer.json" in files_a and set(files_a) == set(files_b)
    assert len(vocab_a) > 1000  # merges happened: the part of training that used to vary
    assert vocab_a == vocab_b
    assert ids_a == ids_b
    for name in files_a:
        assert files_a[name] == files_b[name], name


@pytest.mark.parametrize("model_type", ["bert", "openai-gpt"])
def test_reserved_pieces_end_up_as_ordinary_tokens(model_type, text_file, tmp_path):
    """The derived pieces pass through the trainer as reserved tokens; the tokenizer handed back has only its own
    special tokens (plus the user's), so a literal "##this" or "exception</w>" in a text is split as normal text."""
    args = LanguageModelingArgs(vocab_size=2000, min_frequency=2, cache_dir=str(tmp_path / "c"),
                                special_tokens=["<special-a>"] if model_type == "bert" else None)
    tok = train_tokenizer(get_model_type(model_type), [text_file], args, 64)
    added = [t["content"] for t in json.loads(tok.backend_tokenizer.to_str())["added_tokens"]]
    roles = {str(v) for v in tok.special_tokens_map.values() if isinstance(v, str)}
    assert set(added) - {"<special-a>"} == roles - {"<special-a>"}
    derived = [t for t in tok.get_vocab() if len(t) > 1 and (t.startswith("##") or t.endswith("</w>"))]
    assert len(derived) > 20 and not set(derived) & set(added)
    if model_type == "bert":
        assert "<special-a>" in tok.all_special_tokens
        assert tok.tokenize("a <special-a> b") == ["a", "<special-a>", "b"]
        assert "##s" in derived and "##s" not in tok.tokenize("this##s")  # text, not a token matched whole


def test_the_electra_pair_gets_identical_tokenizers(text_file, tmp_path):
    """From scratch, generator and discriminator share one tokenizer; two such builds save the same files."""
    small = {"embedding_size": 32, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64}
    saved = []
    for name in ("first", "second"):
        args = {"vocab_size": 2000, "min_frequency": 2, "max_seq_length": 64, "cache_dir": str(tmp_path / name),
                "output_dir": str(tmp_path / f"out-{name}"), "overwrite_output_dir": True,
                "generator_config": dict(small), "discriminator_config": dict(small)}
        model = LanguageModelingModel("electra", None, args=args, train_files=str(text_file))
        model.save_model()
        saved.append(_files(Path(args["output_dir"])))
    first, second = saved
    tokenizer_json = [k for k in first if k.endswith("tokenizer.json")]
    assert len(tokenizer_json) == 3  # the pair's folder, the generator's, the discriminator's
    assert len({first[k] for k in tokenizer_json}) == 1
    assert first == second


def test_two_unigram_trainings_agree_on_every_piece_and_id(text_file, tmp_path):
    """CamemBERT's unigram tokenizer: the same pieces, ids and encodings from two trainings (pieces numbered in
    sorted order after the special tokens; without that, near-equal pieces swapped ids). Each piece's score, a
    log probability from the trainer's EM, may differ in its last digits (measured up to 1e-4), nothing more."""
    runs = []
    for name in ("first", "second"):
        args = LanguageModelingArgs(vocab_size=2000, cache_dir=str(tmp_path / name), special_tokens=["<x-a>"])
        tok = train_tokenizer(get_model_type("camembert"), [text_file], args, 64)
        assert Path(tok.name_or_path).is_relative_to(tmp_path / name)
        model = json.loads(tok.backend_tokenizer.to_str())["model"]
        assert model["type"] == "Unigram"
        runs.append((tok.get_vocab(), tok(PROBE + ["a <x-a> b"])["input_ids"], model, tok))
    (vocab_a, ids_a, model_a, tok), (vocab_b, ids_b, model_b, _) = runs
    assert len(vocab_a) > 1000 and vocab_a == vocab_b and ids_a == ids_b
    assert [piece for piece, _ in model_a["vocab"]] == [piece for piece, _ in model_b["vocab"]]
    assert [score for _, score in model_a["vocab"]] == pytest.approx([score for _, score in model_b["vocab"]],
                                                                      abs=1e-3)
    # the special tokens keep their ids and roles, the unknown piece is still the unknown piece
    assert tok.convert_ids_to_tokens(model_a["unk_id"]) == tok.unk_token
    assert tok.convert_ids_to_tokens(ids_a[0][:1] + ids_a[0][-1:]) == [tok.bos_token, tok.eos_token]
    assert "<x-a>" in tok.tokenize("a <x-a> b")
    assert tok.decode(ids_a[0], skip_special_tokens=True).strip() == PROBE[0]
