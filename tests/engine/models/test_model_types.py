"""Every non-ELECTRA model type from scratch: train, evaluate, reload with the Auto classes."""

import math

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lmcore import LanguageModelingModel
from tests.conftest import CAUSAL, TINY, tiny_args


@pytest.mark.parametrize("model_type", [pytest.param(t, marks=pytest.mark.slow) if t == "openai-gpt" else t
                                        for t in sorted(TINY)])  # openai-gpt: ~18 s, the slowest; CI runs it
def test_from_scratch_trains_evaluates_and_reloads(model_type, corpus, tmp_path):
    args = tiny_args(model_type, tmp_path)
    model = LanguageModelingModel(model_type, None, args=args, train_files=corpus["train"])
    vocab = len(model.tokenizer)
    before = model.eval_model(corpus["test"], output_dir=str(tmp_path / "before"))
    step, _ = model.train_model(corpus["train"])
    details = model.training_details
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

    from lmcore.objectives.language import LanguageModelForTraining, token_loss_sum
    from lmcore.models.registry import get_model_type

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


@pytest.mark.parametrize("model_type", ["gpt2", "openai-gpt"])
def test_chunked_causal_head_gives_the_full_models_loss_and_gradients(model_type, monkeypatch):
    """Causal training scores the vocabulary a chunk of rows at a time with hand-computed gradients; loss and
    every parameter's gradient must equal plain transformers' (full logits, its own shifted loss)."""
    from lmcore.models.registry import get_model_type
    from lmcore.objectives import language
    from lmcore.objectives.language import LanguageModelForTraining

    monkeypatch.setitem(language.HEAD_CHUNK_ROWS, torch.float32, 128)  # 447 rows: three full chunks and a short one
    spec = get_model_type(model_type)
    torch.manual_seed(0)
    config = spec.config_cls(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=200)
    model = spec.clm_cls(config).eval()  # no dropout: the two passes must see the same network
    ids = torch.randint(0, 300, (3, 150))  # 447 scored rows
    attn = torch.ones_like(ids)
    attn[2, 100:] = 0
    labels = ids.masked_fill(attn == 0, -100)

    ours_sum, ours_n = LanguageModelForTraining(model, causal=True)(ids, attn, labels)
    (ours_sum / ours_n).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference = model(input_ids=ids, attention_mask=attn, labels=labels).loss
    reference.backward()
    assert int(ours_n) == 2 * 149 + 99
    torch.testing.assert_close(ours_sum / ours_n, reference, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        eval_sum, _ = LanguageModelForTraining(model, causal=True)(ids, attn, labels)
    torch.testing.assert_close(eval_sum / ours_n, reference.detach(), rtol=1e-5, atol=1e-5)


def test_chunked_linear_loss_with_bias_and_bf16_autocast(monkeypatch):
    from lmcore.objectives import language
    from lmcore.objectives.language import linear_loss_sum

    # 480 scored rows: three full chunks and a short one in fp32, two of 256 rows' dtype in bf16 (256 + 224).
    monkeypatch.setitem(language.HEAD_CHUNK_ROWS, torch.float32, 128)
    torch.manual_seed(0)
    head = torch.nn.Linear(24, 500)
    hidden = torch.randn(600, 24, requires_grad=True)
    labels = torch.randint(0, 500, (600,))
    labels[::5] = -100
    loss, n = linear_loss_sum(hidden, head, labels)
    loss.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    hidden.grad = head.weight.grad = head.bias.grad = None
    ref = torch.nn.functional.cross_entropy(head(hidden), labels, reduction="sum")
    ref.backward()
    assert int(n) == 480
    torch.testing.assert_close(loss, ref)
    for a, b in zip(got, (hidden.grad, head.weight.grad, head.bias.grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    hidden.grad = head.weight.grad = head.bias.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = linear_loss_sum(hidden, head, labels)
    assert abs(float(low.detach()) - float(ref.detach())) / float(ref.detach()) < 1e-2
    low.backward()
    for a, b in zip((hidden.grad, head.weight.grad, head.bias.grad), got):
        assert a.dtype == torch.float32 and float((a - b).norm() / b.norm()) < 2e-2

    # Logits hundreds apart (a confident model, or a diverging one): loss and gradients stay finite and exact.
    far = (hidden.detach() * 60).requires_grad_()
    head.zero_grad()
    loss, _ = linear_loss_sum(far, head, labels)
    loss.backward()
    got = (far.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    with torch.no_grad():
        logits = head(far)
    assert float(logits.max() - logits.min()) > 200
    far.grad = None
    head.zero_grad()
    ref = torch.nn.functional.cross_entropy(head(far), labels, reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-2)
    for a, b in zip(got, (far.grad, head.weight.grad, head.bias.grad)):
        assert bool(torch.isfinite(a).all())
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)

    # The gradients are computed once, in the forward pass: a second derivative is refused, not silently wrong.
    loss, _ = linear_loss_sum(hidden, head, labels)
    (grad,) = torch.autograd.grad(loss, hidden, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_fused_gelu_swap_keeps_gpt2_outputs():
    """GPT-2's gelu_new is swapped for the one-kernel tanh GELU; the network's function must not change."""
    from lmcore.training import hardware

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2,
                                                                 n_positions=64)).eval()
    ids = torch.randint(0, 300, (2, 40))
    before = model(input_ids=ids).logits
    assert hardware.fuse_activations(model) == 2
    assert not any(type(m).__name__ == "NewGELUActivation" for m in model.modules())
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def test_families_and_objectives_meet_their_interfaces():
    """The front doors and the loop talk to families and objectives through `ModelFamily` and `Objective` only."""
    import inspect

    from lmcore.objectives.classify import ClassificationObjective
    from lmcore.objectives.electra import ElectraObjective
    from lmcore.models.families import FAMILIES, ModelFamily
    from lmcore.objectives.language import LanguageModelObjective, Objective

    for family in FAMILIES.values():
        assert isinstance(family, ModelFamily)
        for name in ("load", "save", "from_scratch", "training_module", "objective"):
            wanted = list(inspect.signature(getattr(ModelFamily, name)).parameters)[1:]
            assert list(inspect.signature(getattr(family, name)).parameters) == wanted, (family, name)

    class Tok:
        mask_token_id, all_special_ids = 4, [0, 1, 2, 3, 4]

        def __len__(self):
            return 100

    for objective in (LanguageModelObjective(False, Tok()), ElectraObjective(Tok(), 0.15, 50.0),
                      ClassificationObjective(2, regression=False)):
        assert isinstance(objective, Objective)
        assert set(objective.weights) == set(objective.terms)
