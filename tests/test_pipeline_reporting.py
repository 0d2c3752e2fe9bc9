"""What a user reads from the pipeline: an ELECTRA discriminator that learned nothing is called so (metrics beside
its baseline, a tag, a warning); failures read in a few lines that say where the setting lives, with the
traceback kept in a file and on the MLflow run; engine lines carry one timestamp; the corpus table is compact on
screen. Fast: task bodies without orchestration, one tiny untrained ELECTRA."""

from __future__ import annotations

import logging

import pytest
from pipeline_support import SAMPLE, isolate, write_lines


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def test_an_untrained_discriminator_is_named_as_having_learned_nothing(env, tmp_path, caplog):
    """A real ELECTRA pair after one step of training: accuracy at or below the all-original baseline, AUC about
    0.5. Its runs get every discriminator figure, the tag discriminator.learned=false, and the flow log a warning
    in plain words."""
    from lmcore import LanguageModelingModel
    from tasks import tracking
    from tasks.evaluate import METRICS, evaluate, judge_discriminator

    lines = (SAMPLE / "train.txt").read_text().splitlines()[:300]
    train = write_lines(tmp_path / "train.txt", lines)
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "embedding_size": 32}
    args = {"vocab_size": 500, "max_seq_length": 32, "train_batch_size": 4, "max_steps": 1, "save_steps": -1,
            "output_dir": str(tmp_path / "electra"), "cache_dir": str(tmp_path / "cache"),
            "overwrite_output_dir": True, "discriminator_config": small,
            "generator_config": {**small, "hidden_size": 16, "intermediate_size": 32}}
    LanguageModelingModel("electra", None, args=args, train_files=str(train)).train_model(str(train))
    parent = tracking.start_run("pretrain", "parent")
    caplog.set_level(logging.WARNING, logger="pipeline")
    logging.getLogger("pipeline").addHandler(caplog.handler)  # Prefect's logging set-up replaces root's handlers
    try:  # no Prefect run here: the stage logs to "pipeline"
        metrics = evaluate.fn("electra", str(tmp_path / "electra"), str(SAMPLE / "eval.txt"),
                              args={"max_seq_length": 32}, label="tiny", parent_run_id=parent)
    finally:
        logging.getLogger("pipeline").removeHandler(caplog.handler)
    names = {"discriminator_accuracy", "discriminator_baseline_accuracy", "discriminator_precision",
             "discriminator_recall", "discriminator_f1", "discriminator_auc"}
    assert names <= set(metrics) <= set(METRICS)
    assert metrics["discriminator_accuracy"] <= metrics["discriminator_baseline_accuracy"] + 0.001 \
        or metrics["discriminator_auc"] <= 0.51, metrics
    run = tracking.client().get_run(parent)
    assert names <= set(run.data.metrics) and run.data.tags["discriminator.learned"] == "false"
    (child,) = tracking.client().search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert names <= set(child.data.metrics) and child.data.tags["discriminator.learned"] == "false"
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the discriminator has learned nothing" in w and "answering 'original' for every token" in w
               for w in warning), warning
    # One that beats its baseline and chance is marked as having learned; a non-ELECTRA model is not judged.
    good = {"discriminator_accuracy": 0.90, "discriminator_baseline_accuracy": 0.85, "discriminator_auc": 0.8}
    assert judge_discriminator(good, "good") is True
    assert judge_discriminator({**good, "discriminator_auc": 0.5}, "chance") is False
    assert judge_discriminator({"perplexity": 3.0}, "bert") is None


def test_the_training_view_shows_the_discriminators_baseline(env):
    import json

    from tasks import tracking

    exp = tracking.client().get_experiment(tracking.experiment_id("pretrain"))
    columns = json.loads(exp.tags[f"mlflow.sharedViewState.{tracking.TRAINING_VIEW}"])["selectedColumns"]
    at = columns.index("metrics.`discriminator_accuracy`")
    assert columns[at + 1:at + 3] == ["metrics.`discriminator_baseline_accuracy`", "tags.`discriminator.learned`"]
