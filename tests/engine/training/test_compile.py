"""`compile`: the training steps through torch.compile. The rule "auto" follows, the fallback when compiling fails,
and (slow: inductor compiles for tens of seconds on two cores) a compiled run against an eager one, its exact
resume, plain saved weights, and line_by_line batches that stop recompiling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lmcore import ArgsError, LanguageModelingArgs, LanguageModelingModel
from lmcore.data.batches import epoch_batches, split_by_length
from lmcore.data.corpus import resolve_files
from lmcore.models.classification_args import ClassificationArgs
from lmcore.training import compiling
from lmcore.training.precision import Precision
from tests.conftest import sample_lines, tiny_args

BF16_CPU = Precision("cpu", torch.bfloat16)
FP32_CPU = Precision("cpu", None)
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture
def small_corpus(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("\n".join(sample_lines("train.txt", 300)) + "\n")
    return str(f)


def test_auto_compiles_only_where_the_warm_up_is_earned_back():
    # On the CPU compiling never earns back its warm-up by 1.2x (bench/RESULTS.md): auto never compiles there.
    assert not compiling.decide("auto", FP32_CPU, 10**6).on and not compiling.decide("auto", BF16_CPU, 10**6).on
    cuda = Precision("cuda", torch.bfloat16)
    least = compiling.AUTO_MIN_STEPS["cuda"]
    short, long_ = compiling.decide("auto", cuda, least - 1), compiling.decide("auto", cuda, least)
    assert not short.on and long_.on
    assert str(least) in short.reason and "steps planned" in short.reason
    assert compiling.decide(True, FP32_CPU, 1).on and not compiling.decide(False, BF16_CPU, 10**6).on


def test_compile_setting_is_checked_and_shared_with_classification():
    assert any("compile='yes'" in p for p in LanguageModelingArgs(compile="yes").problems())
    assert not LanguageModelingArgs(compile=True).problems()
    assert ClassificationArgs(compile=False).compile is False
    with pytest.raises(ArgsError, match="compile"):
        LanguageModelingModel("bert", None, args={"compile": "sometimes", "vocab_size": 100},
                              train_files=__file__)


def test_bodies_are_the_base_models_each_once():
    import transformers as hf

    from lmcore.objectives.language import LanguageModelForTraining

    model = hf.BertForMaskedLM(hf.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=8))
    assert compiling.bodies(LanguageModelForTraining(model, causal=False)) == [model.bert]


def _train(tmp_path: Path, corpus: str, dropout: bool = False, **kw):
    args = tiny_args("bert", tmp_path, **{"max_steps": 6, "logging_steps": 2, **kw})
    if not dropout:
        args["config"].update(NO_DROPOUT)
    model = LanguageModelingModel("bert", None, args=args, train_files=corpus)
    model.train_model(corpus)
    return model


def test_a_failing_compiler_falls_back_to_eager_saying_why_once(tmp_path, small_corpus, monkeypatch, caplog):
    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compiling, "BACKEND", broken)
    eager = _train(tmp_path / "eager", small_corpus, compile=False)
    with caplog.at_level(logging.WARNING, logger="lmcore"):
        fallen = _train(tmp_path / "fallen", small_corpus, compile=True)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "compil" in r.getMessage()]
    assert len(said) == 1 and "no C++ compiler here" in said[0] and "continues eager" in said[0]
    assert fallen.training_details["compiled"] is False
    assert fallen.training_details["train_loss"] == eager.training_details["train_loss"]
    assert all(b._compiled_call_impl is None for b in compiling.bodies(fallen.model))


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path, small_corpus):
    import transformers as hf

    # Dropout on: the compiled bodies draw their masks with the eager kernels from the same generator.
    eager = _train(tmp_path / "eager", small_corpus, dropout=True, compile=False)
    torch._dynamo.reset()
    before = compiling.compiles()
    compiled = _train(tmp_path / "compiled", small_corpus, dropout=True, compile=True)
    # One graph for the body: the masks' draw traces (an in-place draw broke the graph at every dropout, 29 breaks
    # for the bench's BERT, and inductor fused nothing across them).
    assert compiling.compiles() - before == 1
    details = compiled.training_details
    assert details["compiled"] is True and details["compile_warmup_s"] > 0
    assert details["train_loss"] == pytest.approx(eager.training_details["train_loss"], rel=1e-4)
    # Undone after training: evaluation and later use run the eager module.
    assert all(b._compiled_call_impl is None for b in compiling.bodies(compiled.model))
    loaded = hf.AutoModelForMaskedLM.from_pretrained(compiled.args.output_dir)
    mine = compiled.model.state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, mine[name]), name
    for name, value in eager.model.state_dict().items():
        assert torch.allclose(value, mine[name], atol=1e-4), name


@pytest.mark.slow
def test_compiled_resume_replays_exactly(tmp_path, small_corpus):
    """0 -> 2N compiled equals 0 -> N, stop, N -> 2N compiled, dropout on (inductor's random numbers replay from
    the checkpointed generator state)."""
    n = 4

    def settings(where):
        return tiny_args("bert", where, max_steps=2 * n, save_steps=n, train_batch_size=8, compile=True)

    straight = LanguageModelingModel("bert", None, args=settings(tmp_path / "a"), train_files=small_corpus)
    straight.train_model(small_corpus)
    resumed = LanguageModelingModel("bert", str(Path(straight.args.output_dir) / f"checkpoint-{n}"),
                                    args=settings(tmp_path / "b"))
    resumed.train_model(small_corpus)
    assert resumed.training_details["compiled"] is True
    # Losses and weights agree to float rounding, not bit for bit: inductor's kernels may add a gradient's parts in
    # another order from one compile to the next (measured: losses at most 1e-7 apart, weights 4e-8). A dropout
    # mask that did not replay would move both by orders of magnitude more.
    assert resumed.training_details["train_loss"][:n] == straight.training_details["train_loss"][:n]
    assert resumed.training_details["train_loss"] == pytest.approx(straight.training_details["train_loss"],
                                                                   rel=1e-6)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), f"{k} differs after a compiled resume"


@pytest.mark.slow
def test_line_by_line_batches_stop_recompiling(tmp_path, small_corpus):
    """Batches of many lengths and sizes: one compile for the first shape, one with the sizes symbolic, no more."""
    torch._dynamo.reset()
    before = compiling.compiles()
    model = _train(tmp_path, small_corpus, compile=True, dataset_type="line_by_line", max_steps=12,
                   train_batch_size=8)
    assert model.training_details["compiled"] is True
    graphs = compiling.compiles() - before
    assert 1 <= graphs <= 3, f"{graphs} graphs compiled for line_by_line batches"
    # The run's batches had many shapes, so the bound above means something.
    files = resolve_files(small_corpus, model.args.encoding, model.args.dataset_cache_dir)
    features = model._features(files, model.block_size(), "train")
    lengths = features.lengths()
    shapes = {(len(chunk), max(int(lengths[i]) for i in chunk))
              for batch in epoch_batches(features, 8, model.args.seed, 0, group_by_length=True)[:12]
              for chunk in split_by_length(lengths, batch)}
    assert len(shapes) > 3, shapes


@pytest.mark.slow
def test_the_short_last_batch_of_an_epoch_runs_eager_without_recompiling(tmp_path, small_corpus):
    """Fixed-length blocks: every batch has the first one's shape but the last of an epoch. That one runs eager,
    so a run across the epoch's end compiles one graph (it recompiled with the batch size symbolic before, a second
    warm-up in mid-run: 31 s of a 38 s BERT-base run on an H200), and its losses still match an eager run's."""
    probe = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path / "probe"), train_files=small_corpus)
    files = resolve_files(small_corpus, probe.args.encoding, probe.args.dataset_cache_dir)
    examples = len(probe._features(files, probe.block_size(), "train"))
    batch = next(b for b in (8, 7, 6, 5, 9, 11) if examples % b and examples // b >= 2)
    steps = examples // batch + 2  # the whole first epoch, its short batch, and one step of the next
    torch._dynamo.reset()
    before = compiling.compiles()
    compiled = _train(tmp_path / "compiled", small_corpus, compile=True, max_steps=steps, train_batch_size=batch)
    graphs = compiling.compiles() - before
    assert compiled.training_details["compiled"] is True
    assert graphs == 1, f"{graphs} graphs compiled for {examples} examples in batches of {batch}"
    eager = _train(tmp_path / "eager", small_corpus, compile=False, max_steps=steps, train_batch_size=batch)
    assert compiled.training_details["train_loss"] == pytest.approx(eager.training_details["train_loss"], rel=1e-4)
