"""Exact resume: 0 -> 2N straight equals 0 -> N, stop, N -> 2N, bit for bit (MLM, CLM, ELECTRA)."""

import hashlib
import math
from pathlib import Path

import pytest
import torch

from lmcore import LanguageModelingModel, NonFiniteLossError
from lmcore.training.checkpoint import find
from tests.conftest import sample_lines, tiny_args
from tests.engine.objectives.test_electra import electra_args

N = 6


def settings(model_type, tmp_path, **kw):
    if model_type == "electra":
        return electra_args(tmp_path, max_steps=2 * N, save_steps=N, learning_rate=1e-3,
                            save_model_every_epoch=False, **kw)
    # Dropout stays on (its randomness must replay too); accumulation and an epoch boundary inside the run.
    return tiny_args(model_type, tmp_path, max_steps=2 * N, save_steps=N, gradient_accumulation_steps=2,
                     train_batch_size=8, **kw)


@pytest.fixture
def small_corpus(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("\n".join(sample_lines("train.txt", 120)) + "\n")  # ~ 5 steps per epoch: 2N crosses epochs
    return str(f)


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


@pytest.mark.parametrize("model_type, precision", [("bert", "no"), ("bert", "bf16"), ("gpt2", "no"),
                                                   ("electra", "auto")])
def test_stop_and_resume_replays_exactly(model_type, precision, tmp_path, small_corpus):
    straight = LanguageModelingModel(model_type, None, args=settings(model_type, tmp_path / "a",
                                                                     mixed_precision=precision),
                                     train_files=small_corpus)
    _, _ = straight.train_model(small_corpus)
    full = straight.training_details
    assert full["global_step"] == 2 * N

    # The checkpoint written at step N is what a run stopped at N leaves behind; continue from it in a new model.
    ckpt = Path(straight.args.output_dir) / f"checkpoint-{N}"
    resumed = LanguageModelingModel(model_type, str(ckpt), args=settings(model_type, tmp_path / "b",
                                                                         mixed_precision=precision))
    step, _ = resumed.train_model(small_corpus)
    second = resumed.training_details
    assert step == 2 * N
    assert second["train_loss"] == full["train_loss"]  # the first N restored from the checkpoint, then replayed
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_resume_latest_and_save_total_limit(tmp_path, small_corpus):
    args = tiny_args("bert", tmp_path, max_steps=2 * N, save_steps=2, save_total_limit=2)
    model = LanguageModelingModel("bert", None, args=args, train_files=small_corpus)
    _, _ = model.train_model(small_corpus)
    full = model.training_details
    out = Path(args["output_dir"])
    assert [p.name for p in find(out)] == [f"checkpoint-{2 * N - 2}", f"checkpoint-{2 * N}"]

    # Train further with a larger budget: "latest" picks up checkpoint-2N and continues to 3N.
    more = LanguageModelingModel("bert", None, args={**args, "max_steps": 3 * N, "resume_from_checkpoint": "latest",
                                                     "overwrite_output_dir": False}, train_files=small_corpus)
    step, _ = more.train_model(small_corpus)
    details = more.training_details
    assert step == 3 * N and details["train_loss"][:2 * N] == full["train_loss"]


def test_resume_takes_the_checkpoints_tokenizer_when_the_new_one_numbers_tokens_otherwise(tmp_path, small_corpus,
                                                                                          caplog):
    """A from-scratch run resumed by a model whose freshly built tokenizer gives some tokens other ids (another
    lmcore version's tokenizer training, here two ids swapped by hand) continues with the checkpoint's tokenizer,
    saying so, and matches the uninterrupted run."""
    import json

    args = tiny_args("bert", tmp_path, max_steps=2 * N, save_steps=N)
    model = LanguageModelingModel("bert", None, args=args, train_files=small_corpus)
    model.train_model(small_corpus)
    ckpt = Path(args["output_dir"]) / f"checkpoint-{N}"
    state = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = state["model"]["vocab"]
    a, b = sorted(t for t, i in vocab.items() if i > 100)[:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    other = tmp_path / "other-tokenizer"
    other.mkdir()
    for f in ckpt.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            (other / f.name).write_bytes(f.read_bytes())
    (other / "tokenizer.json").write_text(json.dumps(state))
    (other / "vocab.txt").unlink(missing_ok=True)
    resumed = LanguageModelingModel("bert", None, args={**args, "tokenizer_name": str(other),
                                                        "resume_from_checkpoint": str(ckpt),
                                                        "output_dir": str(tmp_path / "resumed")})
    assert resumed.tokenizer.get_vocab()[a] != model.tokenizer.get_vocab()[a]
    resumed.train_model(small_corpus)
    assert resumed.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert "resuming with the checkpoint's own" in caplog.text
    assert resumed.training_details["train_loss"] == model.training_details["train_loss"]


@pytest.mark.parametrize("optimizer", ["AdamW", "Adafactor"])  # skipped on the device / refused on the host
def test_non_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path, small_corpus, optimizer):
    args = tiny_args("bert", tmp_path, max_steps=N, save_steps=N, optimizer=optimizer)
    model = LanguageModelingModel("bert", None, args=args, train_files=small_corpus)
    model.train_model(small_corpus)
    ckpt = Path(args["output_dir"]) / f"checkpoint-{N}"
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir() if p.is_file()}

    broken = LanguageModelingModel("bert", str(ckpt), args={**args, "max_steps": 2 * N})
    with torch.no_grad():
        broken.model.bert.encoder.layer[0].attention.self.query.weight[0, 0] = math.nan
    before = weights(broken)
    with pytest.raises(NonFiniteLossError, match=rf"step {N + 1}: the training loss is nan.*last checkpoint is intact"):
        broken.train_model(small_corpus)
    after = weights(broken)
    unchanged = [k for k in before if torch.equal(before[k], after[k]) or k.endswith("query.weight")]
    assert len(unchanged) == len(before)  # no optimizer step was taken
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir() if p.is_file()}


def test_bad_input_leaves_an_existing_model_untouched(tmp_path, small_corpus):
    args = tiny_args("bert", tmp_path, max_steps=2)
    model = LanguageModelingModel("bert", None, args=args, train_files=small_corpus)
    model.train_model(small_corpus)
    out = Path(args["output_dir"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01\x02binary")
    from lmcore import CorpusError

    with pytest.raises(CorpusError, match="bad.txt: binary file"):
        model.train_model(str(bad))
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
