"""Every non-ELECTRA model type from scratch: train, evaluate, reload with the Auto classes."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lmcore import LanguageModelingModel
from tests.conftest import CAUSAL, TINY, tiny_args


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_from_scratch_trains_evaluates_and_reloads(model_type, corpus, tmp_path):
    args = tiny_args(model_type, tmp_path)
    model = LanguageModelingModel(model_type, None, args=args, train_files=corpus["train"])
    vocab = len(model.tokenizer)
    before = model.eval_model(corpus["test"], output_dir=str(tmp_path / "before"))
    step, details = model.train_model(corpus["train"])
    result = model.eval_model(corpus["test"])

    assert step == 60 and len(details["train_loss"]) == 60
    assert math.isfinite(result["perplexity"])
    assert result["perplexity"] == pytest.approx(math.exp(result["eval_loss"]))
    # An untrained model is about as perplexed as a uniform guess over the vocabulary; 60 steps must cut that
    # by far (well below the vocabulary size).
    assert before["perplexity"] > 0.5 * vocab
    assert result["perplexity"] < 0.4 * vocab, (result, vocab)
    assert (tmp_path / f"out-{model_type}" / "eval_results.txt").read_text().startswith("eval_loss = ")

    out = args["output_dir"]
    auto = AutoModelForCausalLM if model_type in CAUSAL else AutoModelForMaskedLM
    reloaded = auto.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.is_fast and len(tok) == vocab
    ids = tok("The data can be any iterable", return_tensors="pt")
    model.model.eval()
    with torch.no_grad():
        expected = model.model(**ids).logits
        got = reloaded(**ids).logits
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "camembert", "longformer", "electra"])
def test_masked_only_head_gives_the_full_models_loss(model_type):
    """Training projects only masked positions onto the vocabulary; the loss must equal the full model's."""

    from lmcore.objectives import LanguageModelForTraining, token_loss_sum
    from lmcore.registry import get_model_type

    spec = get_model_type(model_type)
    sizes = TINY.get(model_type, {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                  "intermediate_size": 64, "embedding_size": 16})
    torch.manual_seed(0)
    model = spec.mlm_cls(spec.config_cls(vocab_size=120, **sizes)).eval()
    ids = torch.randint(5, 120, (3, 32))
    attn = torch.ones_like(ids)
    attn[2, 20:] = 0
    labels = torch.where(torch.rand(ids.shape) < 0.2, ids, torch.full_like(ids, -100))
    labels[2, 20:] = -100
    with torch.no_grad():
        fast_sum, fast_n = LanguageModelForTraining(model, False, spec.masked_head)(ids, attn, labels)
        full_sum, full_n = token_loss_sum(model(input_ids=ids, attention_mask=attn).logits, labels, causal=False)
    assert int(fast_n) == int(full_n) > 0
    torch.testing.assert_close(fast_sum, full_sum, rtol=1e-5, atol=1e-4)
