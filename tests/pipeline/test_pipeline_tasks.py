"""Task bodies without orchestration (`task.fn()`): corpus preparation, engine failure classification, one line per
line however many ranks, MLflow run endings and experiment tags, the engine's MLflow tracker, parameter checks and
the deployments' defaults, and which package may import which. Fast: no Prefect server, no model training."""

from __future__ import annotations

import sys

import pytest
from prefect.logging import disable_run_logger

from lmcore import ArgsError, CorpusError
from tests.pipeline_support import ROOT, SAMPLE, isolate, write_lines


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
    # A traceback that ends on a ValueError: a library refused a setting (transformers checks a config only when
    # it builds the model); a retry would fail the same way.
    refused = fails(1, "Traceback (most recent call last):\nValueError: The hidden size (65) is not a multiple")
    assert isinstance(refused, BadRunInput) and "hidden size (65)" in str(refused)
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
    from lmcore.training.tracking import MLflowTracker, tracker_from_environment
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
    from tasks.inputs import check_parameters

    with pytest.raises(ArgsError) as e:
        check_parameters(str(SAMPLE / "train.txt"), {"num_train_epoch": 2, "learning_rate": -1}, nproc_per_node=0)
    text = str(e.value)
    assert "num_train_epoch" in text and "num_train_epochs" in text and "nproc_per_node=0" in text
    with pytest.raises(CorpusError, match="nowhere.txt"):
        check_parameters("nowhere.txt", {})


def test_engine_only_settings_are_refused_by_the_pipeline_with_the_reason():
    from tasks.inputs import check_parameters

    with pytest.raises(ArgsError) as e:
        check_parameters(str(SAMPLE / "train.txt"), {"dataset_class": "my.Dataset", "no_save": True, "fp16": False})
    text = str(e.value)
    assert "args.dataset_class='my.Dataset'" in text and "args.no_save=True" in text and "fp16" not in text
    # How the corpus is read is the pipeline's business too: prepare_corpus applies it.
    assert check_parameters(str(SAMPLE / "train.txt"), {"encoding": "latin-1"}) == {"encoding": "latin-1"}
    assert check_parameters(str(SAMPLE / "train.txt"), {"fp16": False, "no_save": False}) == {"fp16": False,
                                                                                             "no_save": False}


def test_only_rank_0_is_streamed_and_other_ranks_errors_join_the_failure(tmp_path, caplog):
    """Under torchrun a line every rank prints reaches the run log once; a rank that fails with bad input (exit 2)
    fails the run as bad input, and its error line is in the message though its output was not streamed."""
    import logging

    from tasks.pretrain import BadRunInput, launch_command, run_engine

    script = tmp_path / "ranks.py"
    script.write_text("import os, sys, time\n"
                      "print('said by every rank', flush=True)\n"
                      "if os.environ['LOCAL_RANK'] == '1':\n"
                      "    time.sleep(1)\n"
                      "    print('error: rank one refused its settings', file=sys.stderr, flush=True)\n"
                      "    sys.exit(2)\n"
                      "time.sleep(30)\n")
    caplog.set_level(logging.INFO, logger="pipeline")
    with pytest.raises(BadRunInput) as e:  # outside a flow run the lines go to the logger "pipeline"
        run_engine(launch_command([str(script)], 2, tmp_path / "ranks"), env_for_ranks(), "training")
    assert "error: rank one refused its settings" in str(e.value)
    streamed = [r.getMessage() for r in caplog.records if r.name == "pipeline"]
    assert streamed.count("said by every rank") == 1


def env_for_ranks() -> dict:
    import os

    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def test_transformers_config_error_is_bad_input_not_retried(env, tmp_path):
    """hidden_size 65 with 2 heads: transformers refuses it when the engine builds the model; the engine exits 2
    with the reason, so the pretrain task raises BadRunInput (never retried) naming it."""
    from prefect.states import Failed

    from tasks.pretrain import BadRunInput, pretrain, retry_transient

    corpus = write_lines(tmp_path / "c.txt", SAMPLE.joinpath("train.txt").read_text().splitlines()[:200])
    args = {"vocab_size": 300, "max_steps": 2, "max_seq_length": 32, "save_steps": -1,
            "config": {"hidden_size": 65, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}}
    with disable_run_logger(), pytest.raises(BadRunInput) as e:
        pretrain.fn("bert", str(corpus), str(corpus), str(tmp_path / "out"), args=args)
    assert e.value.exit_code == 2 and "hidden size (65)" in str(e.value)
    assert retry_transient(None, None, Failed(data=e.value)) is False


def test_experiments_open_on_the_training_view(env):
    import json

    from tasks import tracking

    exp = tracking.client().get_experiment(tracking.experiment_id("pretrain"))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{tracking.TRAINING_VIEW}"])
    assert "metrics.`perplexity`" in view["selectedColumns"]
    url = tracking.training_view_url("http://127.0.0.1:5000", "pretrain")
    assert url.endswith(f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
                        "&viewStateShareKey=training")
    # An experiment made elsewhere (by `mlflow run --experiment-name`, say) gets the tags when the pipeline uses it.
    other = tracking.client().create_experiment("made-by-mlflow-run")
    tracking.experiment_id("made-by-mlflow-run")
    assert tracking.client().get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"


def test_mlflow_run_parent_is_adopted_only_in_the_flows_experiment(env, monkeypatch):
    """`mlflow run` without --experiment-name makes its run in Default: the pipeline's parent run goes to the flow's
    experiment anyway, and the Default run points at it. In the flow's experiment the run is the parent itself."""
    from tasks import tracking

    client = tracking.client()
    default_run = client.create_run("0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", default_run)
    with tracking.flow_parent_run("pretrain", {"stage": "pretrain"}) as parent:
        pass
    assert parent != default_run
    run = client.get_run(parent)
    assert client.get_experiment(run.info.experiment_id).name == "pretrain" and run.info.status == "FINISHED"
    assert client.get_run(default_run).data.tags["pipeline.parent_run_id"] == parent

    in_place = client.create_run(tracking.experiment_id("pretrain")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", in_place)
    with tracking.flow_parent_run("pretrain", {"stage": "pretrain"}) as parent:
        pass
    assert parent == in_place and client.get_run(in_place).data.tags["stage"] == "pretrain"


def test_deployments_measure_and_register_a_users_corpus_as_its_own():
    """Giving only `corpus` must not score it on the bundled sample or register it into the demo's model: no
    deployment (and no MLproject default) names an eval corpus or a registered name for pretraining; the name
    comes from the corpus."""
    import yaml

    from tasks.inputs import default_model_name

    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    for name in ("from-scratch", "fine-tune"):
        assert not {"eval_corpus", "register_as"} & set(deployments[name]["parameters"]), name
    assert deployments["fine-tune"]["parameters"]["from_scratch"] is False
    project = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["pretrain"]["parameters"]
    assert project["eval_corpus"]["default"] == "" and project["register_as"]["default"] == ""
    assert default_model_name("data/mine.txt", "bert") == "mine-bert"
    assert default_model_name(["/x/My Corpus.txt.gz", "/x/b.txt"], "gpt2") == "my-corpus-gpt2"
    # The sample corpus keeps one name whether it is named by its reserved value or by its file's path.
    assert default_model_name("sample", "bert") == "sample-data-bert"
    assert default_model_name(str(SAMPLE / "train.txt"), "bert") == "sample-data-bert"
    assert default_model_name("./sample", "bert") == "sample-bert"  # a user's own folder named sample
    assert deployments["from-scratch"]["parameters"]["corpus"] == "sample"
    assert deployments["nightly"]["parameters"]["register_as"] == default_model_name(
        deployments["from-scratch"]["parameters"]["corpus"], "bert")


def test_from_scratch_is_a_parameter_of_the_flow():
    from tasks.inputs import check_parameters

    corpus = str(SAMPLE / "train.txt")
    with pytest.raises(ArgsError, match="model_name: this run continues training a saved model"):
        check_parameters(corpus, {}, from_scratch=False, starts_from=())
    with pytest.raises(ArgsError, match="generator_name, discriminator_name: this run trains from scratch"):
        check_parameters(corpus, {}, from_scratch=True, starts_from=("generator_name", "discriminator_name"))
    assert check_parameters(corpus, {}, from_scratch=False, starts_from=("model_name",)) == {}


def test_model_type_facts_come_from_the_engine():
    import typing

    from lmcore.models.registry import MODEL_TYPES
    from tasks.inputs import ModelType
    from tasks.models import pipeline_task

    assert typing.get_args(ModelType) == tuple(MODEL_TYPES)
    assert [pipeline_task(t) for t in ("bert", "electra", "gpt2", "openai-gpt")] == \
        ["fill-mask", "fill-mask", "text-generation", "text-generation"]


def test_engine_imports_neither_prefect_nor_mlflow():
    import subprocess

    code = ("import sys, lmcore, lmcore.__main__, lmcore.data.prepare, lmcore.spec\n"
            "loaded = sorted(m for m in ('prefect', 'mlflow') if m in sys.modules)\n"
            "assert not loaded, loaded")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_flows_import_tasks_only():
    """Flows chain tasks: nothing from the engine, and no MLflow or registry code of their own."""
    import ast

    for path in sorted((ROOT / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] in ("lmcore", "mlflow")], (path.name, names)
        assert "client()" not in path.read_text(), path.name


def test_training_curves_are_drawn_on_the_run_and_its_parent(env, tmp_path):
    from PIL import Image

    from tasks import tracking

    parent = tracking.start_run("curves", "parent")
    child = tracking.start_run("curves", "pretrain", parent)
    for step in range(1, 41):
        tracking.log_metrics(child, {"train_loss": 8.0 / step, "learning_rate": 1e-3 * min(1, step / 4)}, step)
    tracking.log_metrics(child, {"eval_loss": 3.0}, 20)
    assert tracking.log_training_curves(child, also_on=(parent,)) == "training_curves.png"
    for run in (child, parent):
        (tmp_path / run).mkdir()
        local = tracking.client().download_artifacts(run, "training_curves.png", str(tmp_path / run))
        width, height = Image.open(local).size
        assert width > 400 and height > 3 * 150  # three panels: loss, evaluation loss, learning rate
    empty = tracking.start_run("curves", "nothing logged")
    assert tracking.log_training_curves(empty) is None
    assert not tracking.client().list_artifacts(empty)
