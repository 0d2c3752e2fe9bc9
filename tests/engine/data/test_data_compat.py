"""Simple Transformers data settings honoured: tokenizers saved with padding and truncation on, sliding windows,
encoding, process_count, use_hf_datasets, dataset_class."""

import csv
import json
import math
import multiprocessing
import os
import shutil

import numpy as np
import pytest
import tokenizers as tk
import torch
import transformers as hf

from lmcore import CorpusError, LanguageModelingArgs, LanguageModelingModel
from lmcore.data.corpus import iter_lines, resolve_files
from lmcore.data.batches import collate
from lmcore.data.features import features_for
from lmcore.training.evaluate import evaluate
from lmcore.objectives.language import LanguageModelForTraining, LanguageModelObjective
from lmcore.training.precision import Precision
from tests.conftest import sample_lines, tiny_args

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
BLOCK = 64


# ---- tokenizers built here, in a few seconds ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert_dirs(tmp_path_factory) -> dict:
    """A small BERT WordPiece tokenizer saved twice: as trained, and with padding to 128 and truncation at 128
    switched on in tokenizer.json, the way sentence-transformers saves them (e.g. all-MiniLM-L6-v2)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    root = tmp_path_factory.mktemp("bert-tokenizers")
    tok = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(sample_lines("train.txt", 2000), trainers.WordPieceTrainer(vocab_size=1000,
                                                                                        special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    plain, padded = root / "plain", root / "padded"
    hf.BertTokenizerFast(tokenizer_object=tok).save_pretrained(str(plain))
    # The exact structure `tokenizers` writes for these settings, taken from the library itself.
    shaped = tk.Tokenizer.from_str(tok.to_str())
    shaped.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    shaped.enable_truncation(max_length=128)
    saved = json.loads(shaped.to_str())
    shutil.copytree(plain, padded)
    doc = json.loads((padded / "tokenizer.json").read_text())
    doc["padding"], doc["truncation"] = saved["padding"], saved["truncation"]
    (padded / "tokenizer.json").write_text(json.dumps(doc))
    return {"plain": plain, "padded": padded}


def load(folder):
    return hf.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    bpe = tk.ByteLevelBPETokenizer()
    bpe.train_from_iterator(sample_lines("train.txt", 2000), vocab_size=600, min_frequency=2,
                            special_tokens=["<|endoftext|>"])
    return hf.GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def args_for(tmp_path, **overrides) -> LanguageModelingArgs:
    return LanguageModelingArgs(cache_dir=str(tmp_path / "cache"), reprocess_input_data=False, **overrides)


def same(a, b) -> bool:
    return (np.asarray(a.tokens).tobytes() == np.asarray(b.tokens).tobytes()
            and np.array_equal(a.offsets, b.offsets))


# ---- 1. tokenizers saved with padding and truncation on ---------------------------------------------------------

@pytest.mark.parametrize("dataset_type", ["simple", "line_by_line", "text"])
def test_padding_and_truncation_saved_in_the_tokenizer_change_nothing(tmp_path, bert_dirs, dataset_type):
    padded = load(bert_dirs["padded"])
    assert len(padded.backend_tokenizer.encode("a").ids) == 128  # the saved settings are live in the tokenizer
    long_line = " ".join(sample_lines("train.txt", 40))  # far over 128 tokens: truncation would cut it
    write_lines(tmp_path / "docs" / "a.txt", sample_lines("train.txt", 200) + [long_line])
    write_lines(tmp_path / "docs" / "b.txt", sample_lines("eval.txt", 50))
    files = resolve_files(str(tmp_path / "docs"))
    args = args_for(tmp_path, dataset_type=dataset_type)
    plain_features = features_for(files, load(bert_dirs["plain"]), args, BLOCK, build=True)
    padded_features = features_for(files, padded, args, BLOCK, build=True)
    assert plain_features.path != padded_features.path  # different tokenizers, different caches
    assert same(plain_features, padded_features) and len(plain_features) > 10


def test_fine_tuning_an_encoder_saved_with_a_padding_tokenizer(tmp_path, bert_dirs, corpus):
    folder = tmp_path / "minilm-like"
    shutil.copytree(bert_dirs["padded"], folder)
    config = hf.BertConfig(vocab_size=len(load(folder)), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128)
    hf.BertModel(config).save_pretrained(str(folder))  # encoder only: the MLM head starts fresh
    model = LanguageModelingModel("bert", str(folder), args=tiny_args("bert", tmp_path, max_steps=4))
    model.train_model(corpus["train"])
    result = model.eval_model(corpus["test"])
    assert math.isfinite(result["perplexity"]) and result["eval_tokens"] > 0


# ---- 2. sliding windows -------------------------------------------------------------------------------------------

def stream_of(tokenizer, path) -> list[int]:
    return [t for line in path.read_text().splitlines() for t in tokenizer(line, add_special_tokens=False)["input_ids"]]


def strided_perplexity_reference(model, tokens: list[int], window: int, step: int) -> tuple[float, int]:
    """transformers' documented strided perplexity, written out independently of lmcore."""
    ids = torch.tensor([tokens])
    n = ids.shape[1]
    nll_sum, scored, prev_end = 0.0, 0, 0
    for begin in range(0, n, step):
        end = min(begin + window, n)
        new = end - prev_end
        inputs = ids[:, begin:end]
        labels = inputs.clone()
        labels[:, :-new] = -100
        with torch.no_grad():
            loss = model(inputs, labels=labels).loss
        count = int((labels[:, 1:] != -100).sum())
        nll_sum += float(loss) * count
        scored += count
        prev_end = end
        if end == n:
            break
    return nll_sum / scored, scored


def test_gpt2_sliding_window_perplexity_matches_the_documented_algorithm(tmp_path, gpt2_tokenizer):
    test = write_lines(tmp_path / "test.txt", sample_lines("eval.txt", 60))
    torch.manual_seed(0)
    model = hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=len(gpt2_tokenizer), n_positions=BLOCK, n_embd=32, n_layer=2,
                                             n_head=2)).eval()
    stride = 0.4
    features = features_for([test], gpt2_tokenizer, args_for(tmp_path, sliding_window=True, stride=stride), BLOCK,
                            build=True, mode="dev")
    assert features.meta["prefix_tokens"] == 0 and features.score_from is not None
    # A fresh wrapper is in training mode; evaluate() must neither score with dropout nor leave it on in the model.
    result = evaluate(LanguageModelForTraining(model, causal=True), LanguageModelObjective(True, gpt2_tokenizer),
                      features, batch_size=8, pad_id=gpt2_tokenizer.pad_token_id, device=torch.device("cpu"), seed=1,
                      precision=Precision("cpu"))
    assert not model.training
    tokens = stream_of(gpt2_tokenizer, test)
    expected_loss, expected_count = strided_perplexity_reference(model, tokens, BLOCK, int(BLOCK * stride))
    assert result["eval_tokens"] == expected_count == len(tokens) - 1
    assert result["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected_loss), rel=1e-5)


def scored_content(features, suffix: int) -> list[int]:
    """Each example's content tokens from score_from on, joined: every token of the stream exactly once."""
    p = features.meta["prefix_tokens"]
    return [int(t) for i in range(len(features))
            for t in features.example(i)[p + int(features.score_from[i]):len(features.example(i)) - suffix]]


@pytest.mark.parametrize("dataset_type", ["simple", "text", "line_by_line"])
def test_windows_overlap_and_together_hold_the_corpus_once(tmp_path, bert_dirs, dataset_type):
    tok = load(bert_dirs["plain"])
    long_line = " ".join(sample_lines("train.txt", 12))
    a = write_lines(tmp_path / "a.txt", sample_lines("train.txt", 80) + [long_line])
    b = write_lines(tmp_path / "b.txt", sample_lines("eval.txt", 30))
    features = features_for([a, b], tok, args_for(tmp_path, dataset_type=dataset_type, sliding_window=True,
                                                  stride=0.3), BLOCK, build=True)
    content = BLOCK - 2
    assert features.lengths().max() == BLOCK and features.meta["window_step"] == int(content * 0.3)
    if dataset_type == "line_by_line":
        lines = [tok(x, add_special_tokens=False)["input_ids"] for f in (a, b) for x in f.read_text().splitlines()]
        assert scored_content(features, 1) == [t for line in lines for t in line]
        assert len(features) > sum(1 for line in lines if line)  # the long line became several windows
    else:
        assert scored_content(features, 1) == stream_of(tok, a) + stream_of(tok, b)
        assert (features.score_from > 0).sum() > len(features) / 2


@pytest.mark.parametrize("dataset_type", ["simple", "text"])
def test_stride_one_gives_the_blocks_of_no_sliding(tmp_path, bert_dirs, dataset_type):
    tok = load(bert_dirs["plain"])
    d = tmp_path / "docs"
    write_lines(d / "a.txt", sample_lines("train.txt", 150))
    write_lines(d / "b.txt", sample_lines("eval.txt", 40))
    files = resolve_files(str(d))
    blocks = features_for(files, tok, args_for(tmp_path, dataset_type=dataset_type), BLOCK, build=True)
    windows = features_for(files, tok, args_for(tmp_path, dataset_type=dataset_type, sliding_window=True,
                                                stride=1.0), BLOCK, build=True)
    assert windows.path != blocks.path and same(windows, blocks)
    assert blocks.score_from is None and not windows.score_from.any()


def test_mlm_sliding_evaluation_scores_each_position_at_most_once(tmp_path, bert_dirs):
    tok = load(bert_dirs["plain"])
    test = write_lines(tmp_path / "test.txt", sample_lines("eval.txt", 60))
    features = features_for([test], tok, args_for(tmp_path, sliding_window=True, stride=0.5), BLOCK, build=True)
    distinct = len(stream_of(tok, test))
    content_positions = int(features.lengths().sum()) - 2 * len(features)
    assert content_positions > 1.8 * distinct  # the windows overlap by half
    torch.manual_seed(0)
    model = hf.BertForMaskedLM(hf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64))
    objective = LanguageModelObjective(False, tok, mlm_probability=0.99)
    result = evaluate(LanguageModelForTraining(model, causal=False), objective, features, 16, tok.pad_token_id,
                      torch.device("cpu"), seed=3, precision=Precision("cpu"))
    assert 0.97 * distinct <= result["eval_tokens"] <= distinct

    # ELECTRA's discriminator scores the same positions: every distinct token once.
    from lmcore.objectives.electra import ElectraObjective
    from lmcore.models.families import ElectraPair

    small = dict(vocab_size=len(tok), embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=32)
    pair = ElectraPair(hf.ElectraForMaskedLM(hf.ElectraConfig(**small)),
                       hf.ElectraForPreTraining(hf.ElectraConfig(**small)), tie=True).eval()
    electra = ElectraObjective(tok, mlm_probability=0.15, weight=50.0)
    with torch.no_grad():
        disc_tokens = sum(electra.eval_sums(pair, electra.prepare(
            collate(features, range(i, min(i + 16, len(features))), tok.pad_token_id, score=True),
            lambda example: torch.Generator().manual_seed(example)))["disc_tokens"]
            for i in range(0, len(features), 16))
    assert disc_tokens == distinct


def test_training_batches_carry_no_score_mask(tmp_path, bert_dirs):
    test = write_lines(tmp_path / "test.txt", sample_lines("eval.txt", 30))
    features = features_for([test], load(bert_dirs["plain"]), args_for(tmp_path, sliding_window=True, stride=0.5),
                            BLOCK, build=True)
    assert "score_mask" not in collate(features, range(4), 0)
    assert collate(features, range(4), 0, score=True)["score_mask"].dtype == torch.bool


# ---- 3. encoding --------------------------------------------------------------------------------------------------

def test_latin1_corpus_round_trips(tmp_path, bert_dirs):
    text = "café au lait, naïve façade\r\nsecond line é\n"
    latin = tmp_path / "latin" / "c.txt"
    latin.parent.mkdir()
    latin.write_bytes(text.encode("latin-1"))
    assert list(iter_lines(latin, encoding="latin-1")) == ["café au lait, naïve façade", "second line é"]
    utf8 = tmp_path / "utf8" / "c.txt"
    utf8.parent.mkdir()
    utf8.write_bytes(text.encode("utf-8"))
    tok = load(bert_dirs["plain"])
    a = features_for([latin], tok, args_for(tmp_path, encoding="latin-1"), BLOCK, build=True)
    b = features_for([utf8], tok, args_for(tmp_path), BLOCK, build=True)
    assert same(a, b)
    with pytest.raises(CorpusError, match=r"c\.txt: invalid ascii at byte offset 3"):
        list(iter_lines(latin, strict_utf8=True, encoding="ascii"))
    wide = tmp_path / "utf16" / "c.txt"  # NUL bytes everywhere, yet text
    wide.parent.mkdir()
    wide.write_bytes(text.encode("utf-16"))
    assert resolve_files(str(wide), encoding="utf-16") == [wide]
    assert same(features_for([wide], tok, args_for(tmp_path, encoding="utf-16"), BLOCK, build=True), b)


# ---- 4. process_count --------------------------------------------------------------------------------------------

def big_corpus(folder, megabytes: float):
    lines = sample_lines("train.txt")
    block = ("\n".join(lines) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a.txt", "b.txt"):
        with open(folder / name, "wb") as f:
            while f.tell() < megabytes / 2 * 2**20:
                f.write(block)
    return resolve_files(str(folder))


@pytest.mark.parametrize("dataset_type", ["simple", "line_by_line"])
def test_worker_processes_give_byte_identical_features(tmp_path, bert_dirs, caplog, dataset_type):
    files = big_corpus(tmp_path / "big", 3)
    tok = load(bert_dirs["plain"])
    one = features_for(files, tok, args_for(tmp_path / "one", dataset_type=dataset_type, process_count=1), BLOCK,
                       build=True)
    caplog.clear()
    two = features_for(files, tok, args_for(tmp_path / "two", dataset_type=dataset_type, process_count=2), BLOCK,
                       build=True)
    assert same(one, two) and one.num_tokens > 500_000
    assert any("MB/s, 2 tokenizing processes" in r.getMessage() for r in caplog.records)
    assert not multiprocessing.active_children()


def test_a_corpus_error_in_a_worker_run_names_the_file_and_ends_the_pool(tmp_path, bert_dirs):
    files = big_corpus(tmp_path / "big", 3)
    with open(files[1], "ab") as f:
        f.write(b"bad \xff byte\n")
    args = args_for(tmp_path, process_count=2, strict_utf8=True)
    with pytest.raises(CorpusError, match=r"b\.txt: invalid UTF-8 at byte offset"):
        features_for(files, load(bert_dirs["plain"]), args, BLOCK, build=True)
    assert not multiprocessing.active_children()
    assert not list((tmp_path / "cache" / "features").glob("*/meta.json"))


# ---- 5. use_hf_datasets ------------------------------------------------------------------------------------------

def corpus_lines():
    return sample_lines("train.txt", 300) + ['He said "NA" and\tleft.', "", "NA", "null", "   "]


@pytest.mark.parametrize("data_format", ["jsonl", "tsv"])
@pytest.mark.parametrize("chunk_text", [True, False])
def test_hf_datasets_rows_give_the_features_of_the_same_text_file(tmp_path, bert_dirs, data_format, chunk_text):
    lines = corpus_lines()
    txt = write_lines(tmp_path / "c.txt", lines)
    other = tmp_path / f"c.{data_format}"
    if data_format == "jsonl":
        other.write_text("".join(json.dumps({"id": i, "text": x}) + "\n" for i, x in enumerate(lines)))
    else:
        with open(other, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["id", "text"])
            w.writerows([i, x] for i, x in enumerate(lines))
    tok = load(bert_dirs["plain"])
    kind = {} if chunk_text else {"dataset_type": "line_by_line"}
    plain = features_for([txt], tok, args_for(tmp_path, **kind), BLOCK, build=True)
    rows = features_for([other], tok, args_for(tmp_path, use_hf_datasets=True, data_format=data_format,
                                               chunk_text=chunk_text, dataset_cache_dir=str(tmp_path / "hf")),
                        BLOCK, build=True)
    assert same(plain, rows)
    assert rows.meta["rows_skipped"] == 2 and rows.meta["data_format"] == data_format


def test_hf_datasets_without_a_text_column_names_file_and_columns(tmp_path, bert_dirs):
    f = tmp_path / "c.jsonl"
    f.write_text('{"content": "hello there", "id": 1}\n')
    args = args_for(tmp_path, use_hf_datasets=True, data_format="jsonl", dataset_cache_dir=str(tmp_path / "hf"))
    with pytest.raises(CorpusError, match=r"c\.jsonl: no 'text' column .*content, id"):
        features_for([f], load(bert_dirs["plain"]), args, BLOCK, build=True)


# ---- 6. dataset_class --------------------------------------------------------------------------------------------

class LinesDataset(torch.utils.data.Dataset):
    """A user's dataset the Simple Transformers way: one tensor of token ids per line."""

    def __init__(self, tokenizer, args, file_path, mode, block_size):
        assert isinstance(file_path, str) and mode in ("train", "dev")
        with open(file_path) as f:
            lines = [x for x in f.read().splitlines() if x.strip()]
        self.items = [torch.tensor(tokenizer(x, truncation=True, max_length=block_size)["input_ids"])
                      for x in lines]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class TooLongDataset(LinesDataset):
    def __getitem__(self, i):
        return list(range(100)) if i == 3 else self.items[i]


def test_dataset_class_items_become_the_examples(tmp_path, bert_dirs):
    tok = load(bert_dirs["plain"])
    f = write_lines(tmp_path / "c.txt", sample_lines("train.txt", 50))
    features = features_for([f], tok, args_for(tmp_path, dataset_class=LinesDataset), BLOCK, build=True, mode="dev")
    expected = LinesDataset(tok, None, str(f), "dev", BLOCK)
    assert len(features) == len(expected) and features.meta["dataset_type"] == "custom"
    assert all(np.array_equal(features.example(i), expected[i].numpy()) for i in range(len(expected)))
    assert features.example(0)[0] == tok.cls_token_id and features.meta["block_size"] == BLOCK
    with pytest.raises(ValueError, match=r"TooLongDataset, item 3 .*100 tokens, more than block_size 64"):
        features_for([f], tok, args_for(tmp_path, dataset_class=TooLongDataset), BLOCK, build=True)
