"""Fine-tuning really starts from the saved weights; perplexity matches an independent computation."""

import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, BertModel

from lmcore import LanguageModelingModel
from lmcore.data.features import load_features
from lmcore.training.evaluate import EVAL_SEED_SALT, batch_generator
from lmcore.objectives.language import mask_tokens, maskable, row_draws
from tests.conftest import sample_lines, tiny_args


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_finetune_loads_the_saved_weights_and_lowers_perplexity(model_type, trained_dirs, corpus, tmp_path):
    saved_dir = trained_dirs[model_type]
    saved = load_file(f"{saved_dir}/model.safetensors")
    model = LanguageModelingModel(model_type, saved_dir, args=tiny_args(model_type, tmp_path, max_steps=60,
                                                                           learning_rate=1e-3))
    state = model.model.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor, msg=f"{name} not loaded")
    assert len(model.tokenizer) == model.model.config.vocab_size

    # New text from the same domain (the saved model trained on the first 1200 lines for 40 steps).
    new_train, held_out = tmp_path / "more.txt", tmp_path / "held_out.txt"
    new_train.write_text("\n".join(sample_lines("train.txt")[1200:2400]) + "\n")
    held_out.write_text("\n".join(sample_lines("eval.txt")[:200]) + "\n")
    before = model.eval_model(str(held_out))
    model.train_model(str(new_train))
    after = model.eval_model(str(held_out))
    assert after["perplexity"] < before["perplexity"] * 0.97, (before, after)
    changed = sum(not torch.equal(model.model.state_dict()[n].cpu(), t) for n, t in saved.items())
    assert changed > len(saved) // 2


def test_two_evaluations_of_one_model_agree_exactly(trained_dirs, corpus, tmp_path):
    model = LanguageModelingModel("bert", trained_dirs["bert"], args=tiny_args("bert", tmp_path))
    assert model.eval_model(corpus["test"]) == model.eval_model(corpus["test"])


def test_encoder_without_mlm_head_loads_with_fresh_head_and_warning(trained_dirs, tmp_path, caplog):
    cfg = BertConfig.from_pretrained(trained_dirs["bert"])
    encoder = BertModel(cfg)
    encoder.save_pretrained(tmp_path / "encoder")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(trained_dirs["bert"]).save_pretrained(tmp_path / "encoder")
    with caplog.at_level(logging.WARNING, logger="lmcore"):
        model = LanguageModelingModel("bert", str(tmp_path / "encoder"), args=tiny_args("bert", tmp_path))
    assert any("freshly initialised" in r.message and "cls.predictions" in r.message for r in caplog.records)
    torch.testing.assert_close(model.model.bert.embeddings.word_embeddings.weight,
                               encoder.embeddings.word_embeddings.weight)


def test_clm_perplexity_matches_plain_transformers(trained_dirs, corpus, tmp_path):
    model = LanguageModelingModel("gpt2", trained_dirs["gpt2"], args=tiny_args("gpt2", tmp_path, eval_batch_size=5))
    ours = model.eval_model(corpus["test"])

    hf = AutoModelForCausalLM.from_pretrained(trained_dirs["gpt2"]).eval()
    feats = load_features([__import__("pathlib").Path(corpus["test"])], model.tokenizer, "simple",
                          model.block_size(), str(tmp_path / "cache"))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(feats)):  # one block at a time: no padding anywhere
            ids = torch.tensor(np.asarray(feats.example(i), dtype=np.int64))[None]
            out = hf(input_ids=ids, labels=ids)
            n = ids.shape[1] - 1
            total += out.loss.item() * n
            count += n
    assert ours["eval_tokens"] == count
    assert ours["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_mlm_perplexity_is_token_weighted_like_plain_transformers(trained_dirs, corpus, tmp_path):
    model = LanguageModelingModel("bert", trained_dirs["bert"], args=tiny_args("bert", tmp_path, eval_batch_size=7))
    ours = model.eval_model(corpus["test"])

    hf = AutoModelForMaskedLM.from_pretrained(trained_dirs["bert"]).eval()
    tok = model.tokenizer
    feats = load_features([__import__("pathlib").Path(corpus["test"])], tok, "simple", model.block_size(),
                          str(tmp_path / "cache"))
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(math.ceil(len(feats) / 7)):
            rows = [np.asarray(feats.example(i), dtype=np.int64) for i in range(b * 7, min(b * 7 + 7, len(feats)))]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), tok.pad_token_id)
            attn = torch.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = torch.from_numpy(row)
                attn[r, :len(row)] = 1
            # Each example's masks come from a generator seeded by its number (independent of batching).
            gens = [batch_generator(model.args.seed, EVAL_SEED_SALT, i) for i in range(b * 7, b * 7 + len(rows))]
            draws = row_draws(gens, attn.sum(1), width, len(tok))
            inputs, labels = mask_tokens(ids, maskable(ids, attn, special), tok.mask_token_id, 0.15, draws)
            out = hf(input_ids=inputs, attention_mask=attn, labels=labels)  # HF's own mean over masked tokens
            n = int((labels != -100).sum())
            total += out.loss.item() * n
            count += n
    assert ours["eval_tokens"] == count
    # A mean of per-batch means would differ: the batches hold different numbers of masked tokens.
    assert ours["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)
