"""The Simple Transformers settings that shape a training run, checked by what the run does: what is written,
when it stops, what each optimizer group learns, what is returned and logged."""

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from lmcore import ArgsError, LanguageModelingModel
from lmcore.training.checkpoint import find, load_state
from tests.conftest import tiny_args


def weights(lm) -> dict:
    return {k: v.detach().clone() for k, v in lm.model.named_parameters()}


def test_no_save_writes_nothing_and_returns_the_mean_training_loss(corpus, tmp_path):
    args = tiny_args("bert", tmp_path, no_save=True, max_steps=12, save_steps=4, save_model_every_epoch=True,
                     evaluate_during_training=False, overwrite_output_dir=False)
    out = Path(args["output_dir"])
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    step, loss = lm.train_model(corpus["train"])
    lm.eval_model(corpus["test"])
    assert step == 12
    assert loss == pytest.approx(sum(lm.training_details["train_loss"]) / 12) and math.isfinite(loss)
    assert not out.exists() and not Path(args["best_model_dir"]).exists()


def test_early_stopping_stops_when_the_patience_runs_out(corpus, tmp_path):
    # No evaluation can improve on the first by more than a huge delta: every later one counts against patience.
    args = tiny_args("bert", tmp_path, max_steps=40, evaluate_during_training=True,
                     evaluate_during_training_steps=2, use_early_stopping=True, early_stopping_patience=3,
                     early_stopping_delta=1e9, save_eval_checkpoints=False)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    step, scores = lm.train_model(corpus["train"], eval_file=corpus["test"])
    assert step == 2 * (1 + 3) and lm.training_details["stopped_early"]
    assert scores["global_step"] == [2, 4, 6, 8]
    assert set(scores) >= {"global_step", "train_loss", "eval_loss", "perplexity"}
    assert scores["train_loss"] == [lm.training_details["train_loss"][s - 1] for s in scores["global_step"]]
    with open(Path(args["output_dir"]) / "training_progress_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == [2, 4, 6, 8]
    assert float(rows[-1]["perplexity"]) == pytest.approx(scores["perplexity"][-1])


def test_early_stopping_on_a_metric_to_maximise_and_the_best_model(corpus, tmp_path):
    # Training lowers the loss, so "higher eval_loss is better" never improves after the first evaluation.
    args = tiny_args("bert", tmp_path, max_steps=40, evaluate_during_training=True,
                     evaluate_during_training_steps=5, use_early_stopping=True, early_stopping_patience=2,
                     early_stopping_metric_minimize=False, save_eval_checkpoints=False)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    step, scores = lm.train_model(corpus["train"], eval_file=corpus["test"])
    assert scores["eval_loss"][1] < scores["eval_loss"][0] and scores["eval_loss"][2] < scores["eval_loss"][0]
    assert step == 15
    best = Path(args["best_model_dir"])
    results = dict(line.split(" = ") for line in (best / "eval_results.txt").read_text().splitlines())
    assert float(results["eval_loss"]) == pytest.approx(scores["eval_loss"][0])


def test_evaluation_checkpoints_best_model_switch_and_epoch_evaluations(corpus, tmp_path, caplog):
    args = tiny_args("bert", tmp_path, max_steps=-1, num_train_epochs=2, evaluate_during_training=True,
                     evaluate_during_training_steps=10, save_best_model=False, save_model_every_epoch=True,
                     evaluate_during_training_verbose=True)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    step, scores = lm.train_model(corpus["train"], eval_file=corpus["test"])
    per_epoch = step // 2
    out = Path(args["output_dir"])
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
    expected_steps = sorted(set(list(range(10, step + 1, 10)) + [per_epoch, step]))
    assert scores["global_step"] == expected_steps
    assert f"checkpoint-{per_epoch}-epoch-1" in names and f"checkpoint-{step}-epoch-2" in names
    assert "checkpoint-10" in names and (out / "checkpoint-10" / "eval_results.txt").exists()
    assert not Path(args["best_model_dir"]).exists()
    assert sum("Eval at step" in r.getMessage() for r in caplog.records) == len(expected_steps)
    # "latest" resumes from the newest of either kind of name.
    assert find(out)[-1].name == f"checkpoint-{step}-epoch-2"


def test_save_total_limit_counts_both_kinds_of_checkpoint(corpus, tmp_path):
    args = tiny_args("bert", tmp_path, max_steps=-1, num_train_epochs=3, save_steps=7, save_total_limit=2,
                     save_model_every_epoch=True)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    step, _ = lm.train_model(corpus["train"])
    kept = [p.name for p in find(args["output_dir"])]
    assert len(kept) == 2 and kept[-1] == f"checkpoint-{step}-epoch-3"


def test_checkpoints_without_optimizer_state_resume_with_a_warning(corpus, tmp_path, caplog):
    args = tiny_args("bert", tmp_path, max_steps=8, save_steps=4, save_optimizer_and_scheduler=False)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    lm.train_model(corpus["train"])
    ckpt = Path(args["output_dir"]) / "checkpoint-4"
    assert "optimizer" not in load_state(ckpt)
    again = LanguageModelingModel("bert", str(ckpt), args=tiny_args("bert", tmp_path / "b", max_steps=8))
    with caplog.at_level(logging.WARNING):
        step, _ = again.train_model(corpus["train"])
    assert step == 8 and any("no optimizer state" in r.getMessage() for r in caplog.records)


def test_constant_schedule_and_custom_groups_decide_who_learns_what(corpus, tmp_path):
    frozen = "bert.embeddings.word_embeddings.weight"
    args = tiny_args("bert", tmp_path, max_steps=6, scheduler="constant_schedule",
                     custom_parameter_groups=[{"params": [frozen], "lr": 0.0}],
                     custom_layer_parameters=[{"layer": 1, "lr": 0.0}])
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    before = weights(lm)
    lm.train_model(corpus["train"])
    after = weights(lm)
    assert lm.training_details["learning_rate"] == [args["learning_rate"]] * 6
    assert torch.equal(before[frozen], after[frozen])
    layer1 = [n for n in before if "layer.1." in n]
    assert layer1 and all(torch.equal(before[n], after[n]) for n in layer1)
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                           after["bert.encoder.layer.0.attention.self.query.weight"])


def test_train_custom_parameters_only_freezes_everything_else(corpus, tmp_path):
    trained = "bert.encoder.layer.0.output.dense.weight"
    args = tiny_args("bert", tmp_path, max_steps=4, train_custom_parameters_only=True,
                     custom_parameter_groups=[{"params": [trained], "lr": 1e-2}])
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    before = weights(lm)
    lm.train_model(corpus["train"])
    after = weights(lm)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed == [trained]
    assert trained in lm.get_named_parameters()


def test_a_custom_group_naming_an_unknown_parameter_is_an_error_with_a_hint(corpus, tmp_path):
    args = tiny_args("bert", tmp_path, custom_parameter_groups=[{"params": ["bert.embeddings.word_embedding.weight"]}])
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    with pytest.raises(ArgsError, match="did you mean 'bert.embeddings.word_embeddings.weight'"):
        lm.train_model(corpus["train"])


def test_adafactor_trains_and_resumes_exactly(corpus, tmp_path):
    def settings(where):
        return tiny_args("bert", where, max_steps=8, save_steps=4, optimizer="Adafactor",
                         adafactor_relative_step=False, adafactor_scale_parameter=False,
                         adafactor_warmup_init=False, learning_rate=1e-2)

    straight = LanguageModelingModel("bert", None, args=settings(tmp_path / "a"), train_files=corpus["train"])
    straight.train_model(corpus["train"])
    losses = straight.training_details["train_loss"]
    assert losses[-1] < losses[0]
    resumed = LanguageModelingModel("bert", str(Path(straight.args.output_dir) / "checkpoint-4"),
                                    args=settings(tmp_path / "b"))
    resumed.train_model(corpus["train"])
    assert resumed.training_details["train_loss"] == losses
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adafactor_with_its_own_relative_step_trains(corpus, tmp_path):
    # Relative steps without warm-up init: Adafactor's own step size, min(1e-2, 1/sqrt(step)), not learning_rate.
    args = tiny_args("bert", tmp_path, max_steps=10, optimizer="Adafactor", adafactor_warmup_init=False,
                     learning_rate=1e-9)
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    lm.train_model(corpus["train"])
    losses = lm.training_details["train_loss"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_silent_hides_progress_lines_and_thread_count_sets_threads(corpus, tmp_path, caplog):
    args = tiny_args("bert", tmp_path, max_steps=5, logging_steps=1, silent=True, thread_count=1)
    before = torch.get_num_threads()
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)  # the process's own count for the tests after this one (conftest.py's)
    lm.train_model(corpus["train"])
    assert not [r for r in caplog.records if r.getMessage().startswith("step ")]
    lm.args.silent = False
    lm.train_model(corpus["train"], args={"overwrite_output_dir": True})
    assert [r for r in caplog.records if r.getMessage().startswith("step ")]


def test_not_saved_args_are_left_out_and_a_saved_model_reloads_its_args(corpus, tmp_path):
    args = tiny_args("gpt2", tmp_path, max_steps=3, not_saved_args=["learning_rate"], block_size=32)
    lm = LanguageModelingModel("gpt2", None, args=args, train_files=corpus["train"])
    lm.train_model(corpus["train"])
    saved = json.loads((Path(args["output_dir"]) / "model_args.json").read_text())
    assert "learning_rate" not in saved and saved["mlm"] is False and saved["model_type"] == "gpt2"
    # Reloaded with no args at all: mlm=False and the block size come back from model_args.json; where it
    # was written does not (a reloaded model must not train back into its own folder unless told to).
    again = LanguageModelingModel("gpt2", args["output_dir"])
    assert again.args.mlm is False and again.args.block_size == 32 and again.args.output_dir == "outputs/"
    assert again.eval_model(corpus["test"], output_dir=str(tmp_path / "e"))["perplexity"] > 1
    override = LanguageModelingModel("gpt2", args["output_dir"], args={"block_size": 16})
    assert override.args.block_size == 16 and override.args.mlm is False


def test_unused_keyword_arguments_are_named_in_a_warning(corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=corpus["train"],
                              proxies={"http": "x"})
    assert any("proxies" in r.getMessage() for r in caplog.records)


def test_local_rank_without_a_launcher_is_an_error(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ArgsError, match="local_rank=0.*launcher"):
        LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, local_rank=0),
                              train_files=corpus["train"])


def test_tensorboard_gets_the_same_per_step_metrics(corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    args = tiny_args("bert", tmp_path, max_steps=6, tensorboard_dir=str(logdir))
    lm = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    lm.train_model(corpus["train"])
    events = EventAccumulator(str(logdir))
    events.Reload()
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == list(range(1, 7))
    assert [e.value for e in loss] == pytest.approx(lm.training_details["train_loss"], rel=1e-6)
