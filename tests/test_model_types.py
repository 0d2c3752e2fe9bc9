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
