"""Task bodies without orchestration (`task.fn()`): corpus preparation, engine failure classification, MLflow run
endings and the engine's MLflow tracker. Fast: no Prefect server, no model training."""

from __future__ import annotations

import sys

import pytest
from pipeline_support import SAMPLE, isolate, write_lines
from prefect.logging import disable_run_logger

from lmcore import ArgsError, CorpusError


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def prepare(**kw):
    from tasks.corpus import prepare_corpus

    with disable_run_logger():
        return prepare_corpus.fn(**kw)


def test_prepare_corpus_dedupes_normalises_and_splits_deterministically(env, tmp_path):
    docs = [f"document number {i} about parsing text" for i in range(400)]
    folder = tmp_path / "corpus"
    write_lines(folder / "a.txt", docs[:250] + docs[:30] + ["", "   "])  # 30 exact duplicates, blank lines
    (folder / "b.txt").write_bytes(("\ufeff" + "\r\n".join(docs[250:] + [docs[5] + "  "]) + "\r\n").encode())
    write_lines(folder / ".hidden.txt", ["never read"])
    out = prepare(corpus=str(folder), eval_fraction=0.1)
    assert out["files"] == 2 and out["documents"] == 400
    assert out["duplicates_dropped"] == 31  # the trailing-space copy of docs[5] is a duplicate once normalised
    assert out["train_lines"] + out["eval_lines"] == 400
    assert 20 <= out["eval_lines"] <= 70  # ~10% of 400 (62 for these very lines: the hash is fixed)
    train = open(out["train_file"], encoding="utf-8").read().splitlines()
    evals = open(out["eval_file"], encoding="utf-8").read().splitlines()
    assert not set(train) & set(evals) and set(train) | set(evals) == set(docs)
    assert "never read" not in train + evals

    # Same content elsewhere, another order of directories: same key, same split.
    other = tmp_path / "copy"
    write_lines(other / "a.txt", docs[:250] + docs[:30] + ["", "   "])
    (other / "b.txt").write_bytes((folder / "b.txt").read_bytes())
    again = prepare(corpus=str(other), eval_fraction=0.1)
    assert again["key"] == out["key"] and again["dir"] == out["dir"]
    assert prepare(corpus=str(folder), eval_fraction=0.2)["key"] != out["key"]


def test_prepare_corpus_eval_corpus_and_tiny_corpus(env, tmp_path):
    out = prepare(corpus=str(SAMPLE / "train.txt"), eval_corpus=str(SAMPLE / "eval.txt"))
    assert out["eval_lines"] == len(set(filter(None, (SAMPLE / "eval.txt").read_text().splitlines())))
    assert out["bytes"] == (SAMPLE / "train.txt").stat().st_size + (SAMPLE / "eval.txt").stat().st_size
    tiny = prepare(corpus=str(write_lines(tmp_path / "t.txt", ["one line", "two lines", "three lines"])))
    assert (tiny["train_lines"], tiny["eval_lines"]) == (2, 1)  # 5% of 3 lines picks none: one goes to eval


def test_prepare_corpus_invalid_bytes_counted(env, tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"good text here\nbad \xff\xfe bytes here\nmore text\n" * 3)
    out = prepare(corpus=str(f))
    assert out["invalid_bytes_replaced"] == 6 and out["duplicates_dropped"] == 6


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"), ("empty", "file is empty"), ("binary", "binary file"),
    ("fraction", "eval_fraction=0"),
])
def test_prepare_corpus_bad_input_names_file_and_problem(env, tmp_path, case, message):
    path = tmp_path / f"{case}.txt"
    if case == "empty":
        path.write_text("")
    elif case == "binary":
        path.write_bytes(b"abc\x00def" * 10)
    elif case == "fraction":
        write_lines(path, ["some text"])
    with pytest.raises(CorpusError) as e:
        prepare(corpus=str(path), eval_fraction=0 if case == "fraction" else 0.05)
    assert message in str(e.value)
    if case != "fraction":
        assert str(path) in str(e.value)


def test_engine_failures_are_classified_for_retries():
    from prefect.states import Failed

    from tasks.pretrain import BadRunInput, EngineFailed, retry_transient, run_engine

    def fails(code, text=""):
        with disable_run_logger(), pytest.raises(EngineFailed) as e:
            run_engine([sys.executable, "-c", f"print({text!r}); raise SystemExit({code})"], {}, "training")
        return e.value

    bad = fails(2, "error: invalid settings: learning_rate=-1: must be positive")
    assert isinstance(bad, BadRunInput) and "learning_rate=-1" in str(bad)
    crash = fails(1)
    assert type(crash) is EngineFailed and crash.exit_code == 1
    # torchrun exits 1 whatever its ranks did; a rank's exit code 2 in its failure report still means bad input.
    assert isinstance(fails(1, "Root Cause:\n  exitcode  : 2 (pid: 77)"), BadRunInput)
    assert retry_transient(None, None, Failed(data=crash)) is True
    assert retry_transient(None, None, Failed(data=bad)) is False


@pytest.mark.parametrize("error, status", [(None, "FINISHED"), (ValueError("x"), "FAILED"),
                                           (KeyboardInterrupt(), "KILLED")])
def test_runs_end_finished_failed_or_killed(env, error, status):
    from tasks import tracking

    parent = tracking.start_run("t", "parent")
    with pytest.raises(type(error)) if error else _nothing():
        with tracking.child_run(parent, "child") as child:
            if error:
                raise error
    assert tracking.client().get_run(child).info.status == status


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_mlflow_tracker_batches_every_step(env):
    from lmcore.tracking import MLflowTracker, tracker_from_environment
    from tasks import tracking

    run_id = tracking.start_run("t", "engine")
    tracker = MLflowTracker(run_id, tracking.tracking_uri())
    tracker.log_params({"model_type": "bert", "block_size": 64})
    for step in range(1, 1201):
        tracker.log_metrics({"train_loss": 10.0 / step, "learning_rate": 1e-3, "tokens_per_second": 500.0}, step)
    tracker.close()
    client = tracking.client()
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, 1201))
    assert history[-1].value == pytest.approx(10.0 / 1200)
    assert client.get_run(run_id).data.params["block_size"] == "64"
    assert tracker_from_environment() is None  # no MLFLOW_RUN_ID: the engine uses its null tracker


def test_bad_parameters_are_named():
    from flows.common import check_parameters

    with pytest.raises(ArgsError) as e:
        check_parameters(str(SAMPLE / "train.txt"), {"num_train_epoch": 2, "learning_rate": -1}, nproc_per_node=0)
    text = str(e.value)
    assert "num_train_epoch" in text and "num_train_epochs" in text and "nproc_per_node=0" in text
    with pytest.raises(CorpusError, match="nowhere.txt"):
        check_parameters("nowhere.txt", {})


def test_engine_only_settings_are_refused_by_the_pipeline_with_the_reason():
    from flows.common import check_parameters

    with pytest.raises(ArgsError) as e:
        check_parameters(str(SAMPLE / "train.txt"), {"encoding": "latin-1", "no_save": True, "fp16": False})
    text = str(e.value)
    assert "args.encoding='latin-1'" in text and "args.no_save=True" in text and "fp16" not in text
    assert check_parameters(str(SAMPLE / "train.txt"), {"fp16": False, "no_save": False}) == {"fp16": False,
                                                                                             "no_save": False}
