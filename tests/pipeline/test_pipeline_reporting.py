"""What a user reads from the pipeline: an ELECTRA discriminator that learned nothing is called so (metrics beside
its baseline, a tag, a warning); failures read in a few lines that say where the setting lives, with the
traceback kept in a file and on the MLflow run; engine lines carry one timestamp; the corpus table is compact on
screen. Fast: task bodies without orchestration, one tiny untrained ELECTRA."""

from __future__ import annotations

import logging

import pytest

from tests.pipeline_support import SAMPLE, isolate, write_lines


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


def _record(name: str, message: str, error: BaseException | None = None, **extra) -> logging.LogRecord:
    import sys

    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, message, (), exc_info)
    record.__dict__.update(extra)
    return record


def test_a_failure_is_shown_once_in_plain_words_and_its_traceback_kept_in_a_file(env, tmp_path):
    """Prefect's records of one failure (the task's, the flow's, the two "Finished in state Failed(...)" and the
    engine's exit) become one line per line of the message; the tracebacks go to the run's log file."""
    from lmcore import CorpusError
    from tasks.runlog import QuietFailures, run_log_file

    quiet = QuietFailures()
    error = CorpusError("bad corpus input:\n  data/a.parquet: no 'text' column (columns: content); set "
                        "args.text_column to the one holding the text")
    ids = {"flow_run_id": "f1", "flow_run_name": "calm-fox"}
    records = [
        _record("prefect.flow_runs", "Running 1 deployment pull step(s)", **ids),
        _record("prefect.task_runs", f"Task run failed with exception: {error!r}", error,
                task_run_name="prepare_corpus-5ae", **ids),
        _record("prefect.task_runs", f"Finished in state Failed('Task run encountered an exception {error}')",
                **ids),
        _record("prefect.flow_runs", f"Encountered exception during execution: {error!r}", error, **ids),
        _record("prefect.flow_runs", f"Finished in state Failed('Flow run encountered an exception. {error}')",
                **ids),
        _record("prefect.flow_runs", "Engine execution exited with unexpected exception", error, **ids),
    ]
    shown = [r for r in records if quiet.filter(r)]
    text = "\n".join(logging.Formatter().format(r) for r in shown)
    assert text.splitlines() == ["prepare_corpus failed: bad corpus input:",
                                 "  data/a.parquet: no 'text' column (columns: content); set args.text_column to "
                                 "the one holding the text", "Finished in state Failed"]
    assert "Traceback" not in text
    kept = run_log_file("f1").read_text()
    assert kept.count("Traceback (most recent call last)") == 3 and "CorpusError" in kept
    # An unexpected error says what it is and where its traceback is.
    crash = _record("prefect.task_runs", "Task run failed with exception: KeyError('x')", KeyError("x"),
                    task_run_name="pretrain-0a1", flow_run_id="f2")
    assert quiet.filter(crash)
    assert crash.getMessage() == f"pretrain failed: KeyError: 'x'\n(traceback: {run_log_file('f2')})"


def test_errors_say_where_the_setting_lives_and_a_refused_shape_fails_before_any_work(env, tmp_path):
    from lmcore import ArgsError, CorpusError
    from tasks.corpus import prepare_corpus
    from tasks.inputs import check_parameters, in_pipeline_terms

    assert in_pipeline_terms("x.csv: no 'text' column; set text_column to the one holding the text") == \
        "x.csv: no 'text' column; set args.text_column to the one holding the text"
    assert in_pipeline_terms("set nothing_known here") == "set nothing_known here"
    import pandas as pd

    (tmp_path / "pq").mkdir()
    pd.DataFrame({"content": ["a text", "another text"]}).to_parquet(tmp_path / "pq" / "part-0.parquet")
    with pytest.raises(CorpusError, match=r"set args\.text_column"):
        prepare_corpus.fn(corpus=str(tmp_path / "pq"))
    with pytest.raises(CorpusError, match=r"(?s)^parameter corpus: .*missing\.txt: no such file"):
        check_parameters(str(tmp_path / "missing.txt"), {})
    bad = {"config": {"hidden_size": 65, "num_attention_heads": 2}}
    with pytest.raises(ArgsError, match=r"args\.config: bert refuses this model: The hidden size \(65\)"):
        check_parameters(str(SAMPLE / "train.txt"), bad, model_type="bert")
    with pytest.raises(ArgsError, match=r"args\.mlm: model_type 'gpt2' has no head for mlm=True"):
        check_parameters(str(SAMPLE / "train.txt"), {}, model_type="gpt2")
    assert check_parameters(str(SAMPLE / "train.txt"), bad, model_type="bert", starts_from=("model_name",))


def test_engine_lines_reach_the_run_log_once_with_one_timestamp_at_their_level(tmp_path, monkeypatch, caplog):
    """The pretrain stage runs the engine with LMCORE_LOG_FORMAT (no timestamp: the run log adds its own), and a
    line from an engine that still stamps its lines loses the stamp; warnings keep their level."""
    import sys

    import lmcore.__main__ as engine_main
    from tasks.pretrain import ENGINE_LOG_FORMAT, engine_env, run_engine

    env = engine_env(1, None)
    assert env["LMCORE_LOG_FORMAT"] == ENGINE_LOG_FORMAT
    program = ("import logging, os; logging.basicConfig(level=20, format=os.environ['LMCORE_LOG_FORMAT']); "
               "logging.getLogger('lmcore.training.train').info('step 10/150 | loss 3.2'); "
               "logging.getLogger('lmcore.model').warning('a warning'); "
               "print('2026-12-02 13:30:44,123 INFO lmcore.data.features: Features: 10 examples', flush=True)")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.levelname, record.getMessage()))

    keep = Keep()
    caplog.set_level(logging.INFO, logger="pipeline")
    logging.getLogger("pipeline").addHandler(keep)
    try:
        run_engine([sys.executable, "-c", program], env, "a fake engine")
    finally:
        logging.getLogger("pipeline").removeHandler(keep)
    assert seen == [("INFO", "lmcore.training.train: step 10/150 | loss 3.2"),
                    ("WARNING", "WARNING lmcore.model: a warning"),
                    ("INFO", "lmcore.data.features: Features: 10 examples")]
    # The engine's command line takes the format from the variable.
    root = logging.getLogger()
    handlers = root.handlers[:]
    monkeypatch.setenv("LMCORE_LOG_FORMAT", ENGINE_LOG_FORMAT)
    root.handlers = []
    try:
        engine_main.main(["eval", "--model-type", "bert", "--model-name", str(tmp_path / "none"),
                          "--eval", str(SAMPLE / "eval.txt")])
        assert root.handlers[0].formatter._fmt == ENGINE_LOG_FORMAT
    finally:
        root.handlers = handlers


def test_the_corpus_table_is_compact_in_the_log_and_whole_in_the_artifact(env, tmp_path, caplog):
    from tasks import tracking
    from tasks.corpus import TABLE_COLUMNS, describe_corpus, prepare_corpus

    prep = prepare_corpus.fn(corpus=str(SAMPLE / "train.txt"))
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    caplog.set_level(logging.INFO, logger="pipeline")
    logging.getLogger("pipeline").addHandler(keep)
    parent = tracking.start_run("pretrain", "parent")
    try:
        records = describe_corpus.fn(prep, None, parent_run_id=parent)
    finally:
        logging.getLogger("pipeline").removeHandler(keep)
    (table,) = [m for m in seen if m.startswith("corpus statistics")]
    header = table.splitlines()[1].split()
    assert header == ["source", "rows", "documents", "tokens", "duplicates"]
    assert table.splitlines()[2].split()[0] == "train.txt" and max(map(len, table.splitlines()[1:])) < 80
    assert set(records[0]) == set(TABLE_COLUMNS)


@pytest.mark.parametrize("fails", [False, True])
def test_setup_is_quiet_unless_a_step_fails(tmp_path, fails):
    """scripts/setup against a stand-in for the venv's python that talks like pip (progress and the nine
    "Location ... is ignored" warnings of the torch install): one line when all goes well; on a failure the step
    and pip's output, without those warnings."""
    import os
    import subprocess

    from tests.pipeline_support import ROOT

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text("#!/bin/sh\n"
                    "echo 'Collecting torch==2.13.0'\n"
                    "for i in 1 2 3 4 5 6 7 8 9; do echo \"WARNING: Location '/x/$i' is ignored: it is neither a "
                    "file nor a directory.\" >&2; done\n"
                    + ("case \"$*\" in *torch==*) echo 'ERROR: No matching distribution found' >&2; exit 1;; esac\n"
                       if fails else "") + "exit 0\n")
    fake.chmod(0o755)
    out = subprocess.run([str(ROOT / "scripts" / "setup")], env={**os.environ, "VENV": str(venv)},
                         capture_output=True, text=True, timeout=60)
    said = (out.stdout + out.stderr).splitlines()
    assert not any("is ignored" in line for line in said), said
    if fails:
        assert out.returncode == 1
        assert said[1].startswith("scripts/setup: failed:") and "torch==2.13.0" in said[1]
        assert "Collecting torch==2.13.0" in said and "ERROR: No matching distribution found" in said
        assert not (venv / ".lmcore-installed").exists()
    else:
        assert out.returncode == 0 and said == [f"Installing into {venv} (torch 2.13.0 CPU first, then the "
                                                "pinned set)..."]
        assert (venv / ".lmcore-installed").exists()


def test_counting_the_tokens_of_long_documents_logs_no_length_warning(env, tmp_path):
    """A document longer than the model's block is normal in a corpus (it is cut into blocks later), so counting
    its tokens must not log transformers' "Token indices sequence length is longer ..." warning; its count is
    whole, and the library's other warnings still get through."""
    from lmcore.models.args import LanguageModelingArgs
    from lmcore.models.registry import get_model_type
    from lmcore.data.tokenizer import train_tokenizer
    from tasks.corpus import prepare_corpus, token_counts

    lines = (SAMPLE / "train.txt").read_text().splitlines()[:400]
    long_ones = [" ".join(lines[i:i + 20]) for i in range(0, 100, 20)]  # thousands of tokens each
    corpus = write_lines(tmp_path / "long.txt", lines[100:] + long_ones)
    tok = train_tokenizer(get_model_type("bert"), [corpus],
                          LanguageModelingArgs(vocab_size=500, cache_dir=str(tmp_path / "c")), 64)
    assert tok.model_max_length == 64
    prep = prepare_corpus.fn(corpus=str(corpus))
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    library = logging.getLogger("transformers")
    keep, level = Keep(), library.level
    library.addHandler(keep)
    library.setLevel(logging.WARNING)  # the test session quiets it to ERROR
    try:
        counts = token_counts(prep, tok)
        logging.getLogger("transformers.tokenization_utils_base").warning("another warning")
    finally:
        library.removeHandler(keep)
        library.setLevel(level)
    assert not [m for m in seen if "sequence length is longer" in m], seen
    assert seen == ["another warning"]
    backend = tok.backend_tokenizer
    texts = open(prep["train_file"]).read().splitlines() + open(prep["eval_file"]).read().splitlines()
    assert sum(counts) == sum(len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False))
    assert max(len(e.ids) for e in backend.encode_batch(long_ones, add_special_tokens=False)) > 64
