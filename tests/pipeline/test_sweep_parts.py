"""The sweep's parts without a server: what `space` and `objective` accept and refuse (before any trial), the
pruning rule, where studies are kept and how they are named, and which trials a resumed sweep still runs."""

from __future__ import annotations

import inspect

import optuna
import pytest
from optuna.trial import TrialState

from lmcore import ArgsError
from tasks.pruning import ClearlyBehind, make_pruner
from tasks.sweep import plan, trial_key
from tasks.sweep_check import check_sweep
from tasks.sweep_space import apply, combinations, parse_objective, parse_space
from tasks.sweep_store import storage_url, study_name
from tests.conftest import ROOT

TINY = {"max_steps": 20, "vocab_size": 500,
        "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}


def pretrain_parameters() -> set[str]:
    from flows.pretrain import pretrain

    return set(inspect.signature(pretrain.fn).parameters)


def check(space, base=None, method="grid", **kw):
    base = base or {"corpus": "c.txt", "args": dict(TINY)}
    return check_sweep(base, space, kw.pop("trials", None), method, kw.pop("objective", "perplexity"),
                       kw.pop("direction", None), kw.pop("max_parallel", 1), kw.pop("prune", True),
                       pretrain_parameters())


def test_a_misspelt_field_is_refused_with_the_nearest_name():
    with pytest.raises(ArgsError) as e:
        check({"learning_rat": [1e-3], "config.hiden_size": [32], "output_dir": ["x"]})
    said = str(e.value)
    assert "learning_rat: not a setting (did you mean learning_rate?)" in said
    assert "config.hiden_size: not a field of the bert config (did you mean config.hidden_size?)" in said
    assert "output_dir: the pipeline chooses it" in said


@pytest.mark.parametrize("space, message", [
    ({"learning_rate": []}, "learning_rate: the list of values is empty"),
    ({"learning_rate": [1e-3, 1e-3]}, "0.001 listed twice"),
    ({"learning_rate": {"low": 1e-3, "high": 1e-4}}, "the range 0.001..0.0001 is empty"),
    ({"learning_rate": {"low": 0, "high": 1e-3, "log": True}}, "a log range must stay above 0"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3}}, "a grid needs the values listed, or a range with a step"),
    ({"learning_rate": {"low": 1e-4, "hi": 1e-3}}, "a range has low and high"),
    ({"model_type": ["bert", "bart"]}, "model_type: unknown 'bart'"),
])
def test_bad_space_is_refused_before_any_trial(space, message):
    with pytest.raises(ArgsError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check(space)


def test_a_combination_the_engine_refuses_is_named():
    with pytest.raises(ArgsError) as e:
        check({"config.hidden_size": [32, 33]})
    said = str(e.value)
    assert "config.hidden_size=33" in said and "config.hidden_size=32" not in said


def test_base_is_checked_too():
    with pytest.raises(ArgsError) as e:
        check({"learning_rate": [1e-3]}, base={"corpus": "c.txt", "model_typ": "bert", "experiment": "x"})
    assert "base.model_typ: not a pretrain parameter (did you mean model_type?)" in str(e.value)
    assert "base.experiment: the sweep sets it" in str(e.value)
    with pytest.raises(ArgsError, match="at least corpus"):
        check({"learning_rate": [1e-3]}, base={"model_type": "bert"})


def test_pruning_switches_on_evaluations_during_training():
    checked = check({"learning_rate": [1e-3, 2e-3]})
    assert checked["base"]["args"]["evaluate_during_training"] is True
    assert checked["base"]["args"]["evaluate_during_training_steps"] == 4  # 20 steps, five evaluations
    unpruned = check({"learning_rate": [1e-3, 2e-3]}, prune=False)
    assert "evaluate_during_training" not in unpruned["base"]["args"]


def test_objectives_and_their_directions():
    assert parse_objective("perplexity", None).direction == "minimize"
    task = "rotten_tomatoes"  # the bundled labelled task
    assert parse_objective(f"downstream.{task}.accuracy", None, task).direction == "maximize"
    assert parse_objective({"metric": "eval_loss", "direction": "maximize"}, None).direction == "maximize"
    assert parse_objective("perplexity", None).prunable
    assert not parse_objective(f"downstream.{task}.gain", None, task).prunable
    with pytest.raises(ArgsError, match="fine-tune on no labelled task"):
        parse_objective(f"downstream.{task}.accuracy", None)
    with pytest.raises(ArgsError, match="'rottentomatoes' is not in downstream"):
        parse_objective("downstream.rottentomatoes.accuracy", None, task)
    with pytest.raises(ArgsError, match="the figure is one of accuracy, f1, mcc, gain"):
        parse_objective(f"downstream.{task}.auc", None, task)
    with pytest.raises(ArgsError, match="only ELECTRA trials log it"):
        parse_objective("discriminator_accuracy", None, None, ("bert",))
    assert parse_objective("discriminator_accuracy", None, None, ("electra",)).direction == "maximize"
    with pytest.raises(ArgsError, match="did you mean perplexity"):
        parse_objective("perplexty", None)


def test_grid_points_in_order_and_values_put_where_they_belong():
    dims = parse_space({"learning_rate": [1e-3, 2e-3], "config.num_hidden_layers": {"low": 1, "high": 3, "step": 2},
                        "model_type": ["bert"]}, ["bert"], "grid")
    points = combinations(dims, "grid")
    assert points == [{"learning_rate": lr, "config.num_hidden_layers": n, "model_type": "bert"}
                      for lr in (1e-3, 2e-3) for n in (1, 3)]
    params = apply({"corpus": "c", "args": {"config": {"hidden_size": 32}}}, points[1])
    assert params["args"] == {"learning_rate": 1e-3, "config": {"hidden_size": 32, "num_hidden_layers": 3}}
    assert params["model_type"] == "bert"


def _study(direction="minimize", pruner=None):
    return optuna.create_study(direction=direction, pruner=pruner)


def _finished(study, curve: dict, value: float):
    t = study.ask()
    for step, v in curve.items():
        t.report(v, step)
    study.tell(t, value)


def test_clearly_behind_prunes_only_past_the_margin():
    study = _study()
    _finished(study, {10: 900.0, 20: 600.0}, 600.0)
    _finished(study, {10: 1000.0, 20: 700.0}, 700.0)
    rule = ClearlyBehind(margin=0.5, percentile=50, min_evaluations=1)  # the median rule, with a margin
    close = study.ask()
    close.report(1300.0, 10)  # median 950: 37% behind, inside the margin
    assert rule.verdict(study, study.trials[close.number]) is None
    far = study.ask()
    far.report(1500.0, 10)  # 58% behind
    said = rule.verdict(study, study.trials[far.number])
    assert said.startswith("pruned at step 10: 1500 is more than 50% behind 950, the median of 2 finished trials")
    late = study.ask()
    late.report(1100.0, 25)  # compared with the finished trials' last values at or before step 25 (650)
    assert rule.verdict(study, study.trials[late.number]) is not None
    # Before n_startup_trials have finished, nobody is pruned.
    young = _study()
    _finished(young, {10: 900.0}, 900.0)
    t = young.ask()
    t.report(5000.0, 10)
    t.report(5000.0, 20)
    assert ClearlyBehind().verdict(young, young.trials[t.number]) is None


def test_the_default_rule_measures_against_the_best_quarter_from_the_second_evaluation():
    """A random start leaves bad trials among the first: the median sits with them and nothing is behind it."""
    study = _study()
    for value in (500.0, 495.0, 300.0):  # two hopeless first trials, one good
        _finished(study, {12: value + 50, 24: value}, value)
    t = study.ask()
    t.report(560.0, 12)
    rule = ClearlyBehind()
    assert rule.verdict(study, study.trials[t.number]) is None  # one evaluation: warm-up may explain it
    t.report(490.0, 24)  # the median (495) would keep it; the best quarter (397.5) does not
    assert ClearlyBehind(percentile=50).verdict(study, study.trials[t.number]) is None
    said = rule.verdict(study, study.trials[t.number])
    assert said.startswith("pruned at step 24: 490 is more than 10% behind 397.5, the 25th-best percentile of 3")
    # Maximizing, the best quarter is the top one.
    up = _study("maximize")
    for value in (0.50, 0.52, 0.80):
        _finished(up, {1: value, 2: value}, value)
    u = up.ask()
    u.report(0.55, 1)
    u.report(0.55, 2)
    assert rule.verdict(up, up.trials[u.number]).startswith("pruned at step 2: 0.55 is more than 10% behind 0.66")


def test_prune_parameter():
    assert make_pruner(False) is None
    assert make_pruner(True).margin == 0.1
    assert make_pruner({"margin": 0.3, "n_startup_trials": 3}).n_startup_trials == 3
    with pytest.raises(ValueError, match="unknown setting"):
        make_pruner({"patience": 2})


def test_studies_live_beside_the_tracking_store(monkeypatch, tmp_path):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert storage_url() == f"sqlite:///{tmp_path}/sweeps.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://me@127.0.0.1:5432/test")
    assert storage_url() == "postgresql://me@127.0.0.1:5432/test?options=-csearch_path%3Dsweeps"
    monkeypatch.setenv("SWEEP_STORAGE", "sqlite:////elsewhere.db")
    assert storage_url() == "sqlite:////elsewhere.db"
    base, space = {"corpus": "c"}, {"learning_rate": [1e-3]}
    name = study_name("s", base, space, "grid", ("perplexity", "minimize"))
    assert name == study_name("s", dict(base), dict(space), "grid", ("perplexity", "minimize"))
    assert name != study_name("s", base, {"learning_rate": [2e-3]}, "grid", ("perplexity", "minimize"))
    assert name.startswith("s-")


def test_a_resumed_grid_runs_only_what_did_not_finish(tmp_path):
    dims = parse_space({"learning_rate": [1e-3, 2e-3, 3e-3]}, ["bert"], "grid")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="g")
    first = plan(study, dims, "grid", None, [])
    assert (first.finished, first.budget, len(first.queue)) == (0, 3, 3)
    for a in first.queue:
        study.enqueue_trial(a)
    done = study.ask({d.name: d.distribution() for d in dims})  # finished before the sweep died
    done.set_user_attr("key", trial_key({"learning_rate": done.params["learning_rate"]}))
    study.tell(done, 5.0)
    again = plan(study, dims, "grid", None, [])
    # Two points still to run, both already enqueued (waiting): run, not enqueued twice.
    assert (again.finished, again.budget, again.queue) == (1, 2, [])
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 2
    capped = plan(study, dims, "grid", 2, [])
    assert (capped.finished, capped.budget) == (1, 1)


@pytest.mark.slow
def test_on_the_team_postgresql_studies_sit_beside_mlflow_in_their_own_schema(monkeypatch):
    """MLflow and Optuna both keep an `alembic_version` table: in one schema each would read the other's
    migrations as its own. The study goes into the schema `sweeps` of MLflow's database, and loads again."""
    import os
    import uuid

    psycopg2 = pytest.importorskip("psycopg2")
    admin_url = os.environ.get("LMCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {admin_url}: {e}")
    admin.autocommit = True
    name = f"lmcore_sweeps_{uuid.uuid4().hex[:8]}"
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        monkeypatch.delenv("SWEEP_STORAGE", raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        from mlflow.tracking import MlflowClient

        from tasks.sweep_store import load_study, open_study

        MlflowClient(tracking_uri=url).search_experiments()  # MLflow's tables, migrated, in schema public
        study = open_study(storage_url(), "team-sweep", "minimize")
        t = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        study.tell(t, 3.5)
        again = load_study(storage_url(), "team-sweep")
        assert [x.value for x in again.trials] == [3.5]
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version' "
                        "ORDER BY table_schema")
            assert [r[0] for r in cur.fetchall()] == ["public", "sweeps"]
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'sweeps' "
                        "AND table_name = 'trials'")
            assert cur.fetchone()[0] == 1
        MlflowClient(tracking_uri=url).create_experiment("still-works")  # MLflow still reads its own version
    finally:  # the storages' engines still hold connections: FORCE drops them
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_trial_that_failed_or_was_pruned_says_why():
    from prefect.states import Completed, Failed

    from tasks.sweep import outcome
    from tasks.sweep_space import Objective

    goal = Objective("perplexity", "minimize")
    failed = outcome(Failed(message="pretrain failed", data=ValueError("vocab_size 3 is too small")), "run", goal)
    assert (failed.state, failed.note) == ("failed", "ValueError: vocab_size 3 is too small")
    pruned = outcome(Completed(data={"stopped_by": "pruned at step 12: 900 is more than 10% behind"}), "run", goal)
    assert (pruned.state, pruned.value) == ("pruned", None) and pruned.note.startswith("pruned at step 12")


def test_a_completed_trial_whose_state_lost_its_data_is_read_from_its_mlflow_run(tmp_path, monkeypatch):
    """A completed trial's state can come back from the API without its result (results are not persisted): the
    outcome is then read from the trial's MLflow run, pruned by its tag, complete by its objective."""
    from prefect.states import Completed

    from tasks import tracking
    from tasks.sweep import outcome
    from tasks.sweep_space import Objective

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    goal = Objective("perplexity", "minimize")
    client = tracking.client()
    exp = client.create_experiment("trials")
    pruned_run, done_run = (client.create_run(exp).info.run_id for _ in range(2))
    tracking.set_tags(pruned_run, {"training.stopped_by": "pruned at step 24: 504 is more than 50% behind"})
    client.log_metric(done_run, "perplexity", 299.0)
    lost = Completed()  # what the API hands back: the state, no data
    pruned = outcome(lost, pruned_run, goal)
    assert (pruned.state, pruned.note) == ("pruned", "pruned at step 24: 504 is more than 50% behind")
    done = outcome(lost, done_run, goal)
    assert (done.state, done.value) == ("complete", 299.0)


def test_taking_over_a_dead_sweep_reruns_its_running_trials_and_refuses_a_live_owner(tmp_path, monkeypatch):
    from tasks import sweep as bookkeeping

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="t")
    dist = {"learning_rate": optuna.distributions.CategoricalDistribution([1e-3, 2e-3, 3e-3])}
    done, left = study.ask(dist), study.ask(dist)
    study.tell(done, 1.0)
    study.set_user_attr("owner", "dead-run")
    monkeypatch.setattr(bookkeeping, "_still_running", lambda run: run == "live-run")
    again = bookkeeping.take_over(study, "me")
    assert again == [left.params] and study.user_attrs["owner"] == "me"
    assert study.trials[left.number].state == TrialState.FAIL
    assert study.user_attrs["interrupted"] == [left.number]
    study.set_user_attr("owner", "live-run")
    with pytest.raises(RuntimeError, match="is running in flow run live-run"):
        bookkeeping.take_over(study, "me")


def test_a_trial_proposed_again_takes_the_finished_result_without_training(tmp_path):
    from tasks.sweep import repeated

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="r")
    dist = {"learning_rate": optuna.distributions.CategoricalDistribution([1e-3])}
    first = study.ask(dist)
    key = trial_key(first.params)
    first.set_user_attr("key", key)
    assert repeated(study, first, key) is None  # itself is not a repeat
    study.tell(first, 4.5)
    second = study.ask(dist)
    said = repeated(study, second, key)
    assert said.startswith(f"has the values of trial {first.number}: its 4.5 is reused")
    assert study.trials[second.number].state == TrialState.COMPLETE and study.trials[second.number].value == 4.5


def test_the_engine_hook_reports_each_evaluation_and_says_when_to_stop(tmp_path, monkeypatch):
    from tasks.pruning import reporter
    from tasks.sweep_store import open_study

    monkeypatch.setenv("SWEEP_STORAGE", f"sqlite:///{tmp_path}/s.db")
    study = open_study(storage_url(), "h", "minimize", pruner=make_pruner({"margin": 0.2}))
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for value in (500.0, 520.0):
        _finished(study, {12: value}, value)
    trial = study.ask(dist)
    hook = reporter("h", trial.number, "perplexity", {"margin": 0.2})  # as the engine's process builds it
    assert hook(12, {"perplexity": 590.0, "eval_loss": 6.4}) is None  # its first evaluation
    said = hook(24, {"perplexity": 700.0})  # no finished value at 24: compared with theirs at 12
    assert said.startswith("pruned at step 24: 700 is more than 20% behind 505, the 25th-best percentile")
    assert study.trials[trial.number].intermediate_values == {12: 590.0, 24: 700.0}
    assert hook(36, {"eval_loss": 6.0}) is None  # an evaluation without the metric is not reported


def test_the_mlproject_entry_points_parse_as_their_flows_command_lines():
    """Each `python -m flows.X ...` entry point of MLproject, with its defaults filled in, is accepted by that
    flow's own command line (a renamed option would otherwise fail only under `mlflow run`)."""
    import importlib
    import shlex

    import yaml

    project = yaml.safe_load((ROOT / "MLproject").read_text())
    checked = []
    for name, entry in project["entry_points"].items():
        words = shlex.split(entry["command"].format(**{k: shlex.quote(str(v.get("default", "x")))
                                                       for k, v in entry["parameters"].items()}))
        if words[:2] != ["python", "-m"] or not words[2].startswith("flows."):
            continue
        module = importlib.import_module(words[2])
        if not hasattr(module, "cli"):  # its parser is built inside main()
            continue
        ns = module.cli().parse_args(words[3:])
        checked.append(name)
        if name == "sweep":
            assert ns.base == {"corpus": "sample", "preset": "demo"} and ns.prune is True and ns.register_as is None
    assert {"pretrain", "sweep"} <= set(checked)
