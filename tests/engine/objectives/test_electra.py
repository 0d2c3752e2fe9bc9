"""ELECTRA: generator + discriminator trained together, saved apart, evaluated apart."""

import math
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, ElectraForMaskedLM,
                          ElectraForPreTraining)

from lmcore import LanguageModelingModel
from lmcore.objectives.electra import histogram_auc, replace_tokens
from tests.conftest import sample_lines
from tests.engine.test_seed_examples import adapt, needs_pages, seed_examples, write_data

# A trained pair shared by the module (~50 s on two cores): CI runs it; the fast suite covers ELECTRA through
# tests/engine/test_simple_transformers_suite.py and tests/engine/training/test_resume.py.
pytestmark = pytest.mark.slow

DISC = {"embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128}


def electra_args(tmp_path, **overrides) -> dict:
    args = {"vocab_size": 2000, "max_seq_length": 64, "train_batch_size": 16, "eval_batch_size": 16,
            "max_steps": 300, "learning_rate": 5e-4, "save_steps": 150, "logging_steps": 50,
            "overwrite_output_dir": True, "output_dir": str(tmp_path / "electra"), "cache_dir": str(tmp_path / "c"),
            "discriminator_config": dict(DISC), "reprocess_input_data": False}
    args.update(overrides)
    return args


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("electra")
    train, test = root / "train.txt", root / "test.txt"
    train.write_text("\n".join(sample_lines("train.txt", 2000)) + "\n")
    test.write_text("\n".join(sample_lines("eval.txt", 150)) + "\n")
    model = LanguageModelingModel("electra", None, args=electra_args(root), train_files=str(train))
    untrained = model.eval_model(str(test), output_dir=str(root / "untrained"))
    model.train_model(str(train))
    return {"model": model, "out": root / "electra", "train": str(train), "test": str(test), "root": root,
            "untrained": untrained, "result": model.eval_model(str(test))}


def test_labels_mark_a_sample_equal_to_the_original_as_original():
    ids = torch.tensor([[2, 10, 11, 12, 13, 3]])
    masked = torch.tensor([[False, True, True, False, True, False]])
    samples = torch.tensor([10, 99, 13])  # position 1 sampled its own token back; 2 replaced; 4 sampled itself
    replaced, labels = replace_tokens(ids, masked, samples)
    assert replaced.tolist() == [[2, 10, 99, 12, 13, 3]]
    assert labels.tolist() == [[0, 0, 1, 0, 0, 0]]


def test_histogram_auc_matches_the_pairwise_definition():
    pos = np.array([0, 0, 0, 1, 0, 0, 0, 1, 2, 0], dtype=float)
    neg = np.array([1, 2, 0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    pairs = [(i, j) for i in range(10) for j in range(10) for _ in range(int(pos[i] * neg[j]))]
    expected = sum(1.0 if i > j else 0.5 if i == j else 0.0 for i, j in pairs) / len(pairs)
    assert histogram_auc(pos, neg) == pytest.approx(expected)


def test_training_beats_the_all_original_baseline_and_reports_the_two_models_apart(trained):
    r, before = trained["result"], trained["untrained"]
    vocab = len(trained["model"].tokenizer)
    assert r["perplexity"] == r["generator_perplexity"] == pytest.approx(math.exp(r["generator_loss"]))
    assert r["eval_loss"] == pytest.approx(r["generator_loss"] + 50 * r["discriminator_loss"])
    assert r["perplexity"] < 0.5 * vocab < before["perplexity"]
    assert r["discriminator_accuracy"] > r["discriminator_baseline_accuracy"]
    assert r["discriminator_precision"] > 0.5 and r["discriminator_auc"] > 0.65 > before["discriminator_auc"] - 0.1
    assert math.exp(r["eval_loss"]) > 1e9  # what the reference system reported as "perplexity"


def test_saved_models_reload_whole_with_their_real_sizes_and_tied_embeddings(trained):
    out = trained["out"]
    gen, info_g = ElectraForMaskedLM.from_pretrained(out / "generator_model", output_loading_info=True)
    disc, info_d = ElectraForPreTraining.from_pretrained(out / "discriminator_model", output_loading_info=True)
    assert not info_g["missing_keys"] and not info_d["missing_keys"]
    assert disc.config.hidden_size == 64 and disc.config.num_hidden_layers == 2
    assert gen.config.hidden_size == 16  # a quarter of the discriminator, as in the paper
    assert gen.config.embedding_size == disc.config.embedding_size == 32
    torch.testing.assert_close(gen.electra.embeddings.word_embeddings.weight,
                               disc.electra.embeddings.word_embeddings.weight)
    live = trained["model"].model
    torch.testing.assert_close(disc.electra.encoder.layer[1].output.dense.weight,
                               live.discriminator.electra.encoder.layer[1].output.dense.weight)
    for name in ("generator_model", "discriminator_model"):
        assert AutoTokenizer.from_pretrained(out / name).is_fast
        assert (out / name / "model.safetensors").exists()

    clf = AutoModelForSequenceClassification.from_pretrained(out / "discriminator_model", num_labels=3)
    torch.testing.assert_close(clf.electra.embeddings.word_embeddings.weight,
                               disc.electra.embeddings.word_embeddings.weight)
    assert clf(**AutoTokenizer.from_pretrained(out / "discriminator_model")("a test", return_tensors="pt")
               ).logits.shape == (1, 3)


def test_save_generator_and_discriminator_from_a_checkpoint(trained, tmp_path):
    ckpt = trained["out"] / "checkpoint-150"
    assert (ckpt / "training_state.pt").exists()
    lm = LanguageModelingModel("electra", str(ckpt), args=electra_args(tmp_path))
    target = tmp_path / "split"
    assert lm.save_discriminator(str(target)) == str(target / "discriminator_model")
    lm.save_generator(str(target))
    saved = load_file(ckpt / "discriminator_model" / "model.safetensors")
    written = load_file(target / "discriminator_model" / "model.safetensors")
    assert saved.keys() == written.keys() and all(torch.equal(saved[k], written[k]) for k in saved)
    assert ElectraForMaskedLM.from_pretrained(target / "generator_model").config.hidden_size == 16


def test_reloaded_pair_continues_training(trained, tmp_path):
    lm = LanguageModelingModel("electra", str(trained["out"]), args=electra_args(tmp_path, max_steps=20))
    assert lm.eval_model(trained["test"]) == pytest.approx(trained["result"])
    step, _ = lm.train_model(trained["train"])
    details = lm.training_details
    assert step == 20 and all(math.isfinite(x) for x in details["train_loss"])
    g, d = lm.model.generator, lm.model.discriminator
    assert g.electra.embeddings.word_embeddings.weight is d.electra.embeddings.word_embeddings.weight


def test_separate_models_keep_the_tie_after_loading(trained, tmp_path):
    out = trained["out"]
    lm = LanguageModelingModel("electra", "electra", generator_name=str(out / "generator_model"),
                               discriminator_name=str(out / "discriminator_model"), args=electra_args(tmp_path))
    g, d = lm.model.generator, lm.model.discriminator
    assert g.electra.embeddings is d.electra.embeddings
    assert g.generator_lm_head.weight is d.electra.embeddings.word_embeddings.weight
    lm.train_model(trained["train"], args={"max_steps": 5})
    assert g.generator_lm_head.weight is d.electra.embeddings.word_embeddings.weight


@needs_pages
def test_seed_electra_examples(trained, tmp_path, monkeypatch):
    """The three ELECTRA examples of the seed pages, with the import swapped and local directories."""
    out = trained["out"]
    minimal = seed_examples("lm-minimal-start.md")
    specifics = seed_examples("lm-specifics.md")
    local = {"google/electra-small-generator": str(out / "generator_model"),
             "google/electra-large-discriminator": str(out / "discriminator_model")}

    write_data(tmp_path, 40)
    (tmp_path / "data" / "train_all.txt").write_text((tmp_path / "data" / "train.txt").read_text())
    monkeypatch.chdir(tmp_path)
    for title in ("Fine-Tuning an ELECTRA model", "Training an ELECTRA model from scratch"):
        scope: dict = {}
        exec(compile(adapt(minimal[title], local), title, "exec"), scope)
        r = scope["result"]
        assert r["perplexity"] == r["generator_perplexity"] and 0 <= r["discriminator_accuracy"] <= 1
        assert (tmp_path / "outputs" / "discriminator_model" / "model.safetensors").exists()

    # The page's checkpoint recipe (its LanguageModelingModel lines; ClassificationModel is another library's),
    # after a run whose single epoch is a single step, so its epoch checkpoint is the one the page names.
    one_step = electra_args(tmp_path, output_dir="outputs", max_steps=-1, train_batch_size=64,
                            save_model_every_epoch=True)
    LanguageModelingModel("electra", None, args=one_step, train_files="data/train.txt").train_model("data/train.txt")
    recipe = [c for c in specifics.values() if "checkpoint-1-epoch-1" in c][0]
    lines = "\n".join(line for line in recipe.splitlines() if "lm_model" in line)
    names = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert "checkpoint-1-epoch-1" in names, names
    weights_file = tmp_path / "outputs" / "checkpoint-1-epoch-1" / "discriminator_model" / "model.safetensors"
    before = weights_file.stat().st_mtime_ns
    exec(compile("from lmcore import LanguageModelingModel\n" + lines, "checkpoint recipe", "exec"), {})
    saved = tmp_path / "outputs" / "checkpoint-1-epoch-1" / "discriminator_model"
    assert weights_file.stat().st_mtime_ns > before  # written again by save_discriminator
    assert AutoModelForSequenceClassification.from_pretrained(saved, num_labels=2).config.num_labels == 2

    code = [c for t, c in specifics.items() if "generator_config" in c and "model_args = {" in c][0]
    scope = {}
    exec(compile("from lmcore import LanguageModelingModel\n" + textwrap.dedent(code), "generator_config example", "exec"), scope)
    pair = scope["model"].model
    assert pair.generator.config.hidden_size == 256 and pair.generator.config.num_hidden_layers == 3
    assert pair.discriminator.config.hidden_size == 256 and pair.discriminator.config.embedding_size == 128
