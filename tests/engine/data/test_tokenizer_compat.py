"""Simple Transformers' tokenizer settings: the WordPiece normalizer knobs, special_tokens_list, train_tokenizer
into an output_dir, and loading tokenizers saved with padding and truncation switched on."""

from __future__ import annotations

import json

import pytest
import transformers as hf

from lmcore.models.args import LanguageModelingArgs
from lmcore.models.registry import get_model_type
from lmcore.data.tokenizer import add_special_tokens_list, load_tokenizer, train_tokenizer, train_tokenizer_into

PROBE = "Café 北京\x07x"
LINES = ["Café au lait in 北京 costs more", "the café near the station", "北京 and 上海 are cities",
         "Hello world, this is a tiny corpus x y z", "CAFÉ CAFE café cafe"] * 40


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def _args(tmp_path, **overrides) -> LanguageModelingArgs:
    return LanguageModelingArgs(vocab_size=300, min_frequency=1, cache_dir=str(tmp_path / "cache"), **overrides)


def _train(tmp_path, corpus_file, model_type="bert", **overrides):
    return train_tokenizer(get_model_type(model_type), [corpus_file], _args(tmp_path, **overrides), 64)


def _normalizer(tok) -> dict:
    return json.loads(tok.backend_tokenizer.to_str())["normalizer"]


# settings -> (the normalizer it must have, the tokens PROBE must become)
CASES = {
    "defaults": ({}, dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False),
                 ["Café", "北", "京", "x"]),
    "lower_case_strips_accents": ({"do_lower_case": True},
                                  dict(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                       lowercase=True), ["cafe", "北", "京", "x"]),
    "lower_case_keeps_accents": ({"do_lower_case": True, "strip_accents": False},
                                 dict(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                      lowercase=True), ["café", "北", "京", "x"]),
    "strip_accents_cased": ({"strip_accents": True},
                            dict(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=False),
                            ["Cafe", "北", "京", "x"]),
    # The control character stays, so "\x07x" is one word whose first character is not in the vocabulary.
    "no_clean_text": ({"clean_text": False},
                      dict(clean_text=False, handle_chinese_chars=True, strip_accents=None, lowercase=False),
                      ["Café", "北", "京", "[UNK]"]),
    # Without spaces around CJK characters (and the control character dropped) "北京x" is one word, which this
    # vocabulary cannot spell ("x" never continues a word in the corpus).
    "no_chinese_chars": ({"handle_chinese_chars": False},
                         dict(clean_text=True, handle_chinese_chars=False, strip_accents=None, lowercase=False),
                         ["Café", "[UNK]"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wordpiece_normalizer_settings_survive_save_and_reload(tmp_path, corpus_file, case):
    overrides, normalizer, tokens = CASES[case]
    trained = _train(tmp_path, corpus_file, **overrides)
    folder = trained.name_or_path
    # A plain AutoTokenizer load, as any user or the MLflow model flavour would do it, not only ours.
    for tok in (trained, hf.AutoTokenizer.from_pretrained(folder), load_tokenizer(folder)):
        assert _normalizer(tok) == {"type": "BertNormalizer", **normalizer}
        assert tok.tokenize(PROBE) == tokens
        assert tok.mask_token == "[MASK]" and tok.convert_tokens_to_ids("[MASK]") == tok.mask_token_id


def test_defaults_keep_the_bert_class_and_settings_change_the_cache_key(tmp_path, corpus_file):
    plain = _train(tmp_path, corpus_file)
    assert type(hf.AutoTokenizer.from_pretrained(plain.name_or_path)).__name__ == "BertTokenizer"
    unclean = _train(tmp_path, corpus_file, clean_text=False)
    assert unclean.name_or_path != plain.name_or_path
    for name in ("strip_accents", "handle_chinese_chars"):
        other = _train(tmp_path, corpus_file, **{name: not getattr(LanguageModelingArgs(), name)})
        assert other.name_or_path != plain.name_or_path


def test_distilbert_without_clean_text_keeps_its_input_names(tmp_path, corpus_file):
    tok = _train(tmp_path, corpus_file, model_type="distilbert", clean_text=False)
    again = hf.AutoTokenizer.from_pretrained(tok.name_or_path)
    assert again.model_input_names == ["input_ids", "attention_mask"]
    assert "token_type_ids" not in again("a café")


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_special_tokens_list_is_one_unsplit_special_id(tmp_path, corpus_file, model_type):
    tok = _train(tmp_path, corpus_file, model_type=model_type)
    size = len(tok)
    role = tok.mask_token or tok.eos_token
    assert add_special_tokens_list(tok, ["<ent>", "<ent>", role, "<rel>"]) == 2
    assert len(tok) == size + 2
    ent = tok.convert_tokens_to_ids("<ent>")
    assert ent in tok.all_special_ids and tok.convert_tokens_to_ids("<rel>") in tok.all_special_ids
    assert tok("<ent>", add_special_tokens=False)["input_ids"] == [ent]
    assert ent in tok("café<ent>x", add_special_tokens=False)["input_ids"]
    assert add_special_tokens_list(tok, ["<ent>"]) == 0 and add_special_tokens_list(tok, []) == 0
    tok.save_pretrained(str(tmp_path / "saved"))
    again = load_tokenizer(str(tmp_path / "saved"))
    assert again.convert_tokens_to_ids("<ent>") == ent and ent in again.all_special_ids


def test_train_tokenizer_into_output_dir(tmp_path, corpus_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_args.json").write_text("{}")
    (out / "merges.txt").write_text("stale merges of an earlier byte-level tokenizer\n")
    spec, args = get_model_type("bert"), _args(tmp_path, do_lower_case=True)
    tok = train_tokenizer_into(spec, [corpus_file], args, 64, out)
    assert (out / "model_args.json").read_text() == "{}"
    assert not (out / "merges.txt").exists()
    assert {"tokenizer.json", "tokenizer_config.json"} <= {f.name for f in out.iterdir()}
    assert not [f for f in out.iterdir() if ".tmp-" in f.name]
    assert tok.tokenize("CAFÉ") == ["cafe"] and tok.model_max_length == 64
    cached = train_tokenizer(spec, [corpus_file], args, 64)
    assert tok.get_vocab() == cached.get_vocab()
    # Training again into the same folder (another type) replaces the tokenizer and keeps the rest.
    gpt = train_tokenizer_into(get_model_type("gpt2"), [corpus_file], args, 64, out)
    assert type(hf.AutoTokenizer.from_pretrained(str(out))).__name__ == "GPT2Tokenizer"
    assert not (out / "vocab.txt").exists() and gpt.get_vocab() == hf.AutoTokenizer.from_pretrained(
        str(out)).get_vocab()
    assert (out / "model_args.json").exists()


def test_load_tokenizer_saved_with_padding_and_truncation(tmp_path, corpus_file):
    """sentence-transformers exports (and many hub models) switch both on in tokenizer.json."""
    for model_type in ("bert", "roberta"):
        folder = tmp_path / f"st-{model_type}"
        tok = _train(tmp_path, corpus_file, model_type=model_type)
        tok.save_pretrained(str(folder))
        backend = json.loads((folder / "tokenizer.json").read_text())
        backend["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
        backend["padding"] = {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": None,
                              "pad_id": tok.pad_token_id, "pad_type_id": 0, "pad_token": tok.pad_token}
        (folder / "tokenizer.json").write_text(json.dumps(backend))
        loaded = load_tokenizer(str(folder))
        assert loaded.is_fast and loaded.get_vocab() == tok.get_vocab()
