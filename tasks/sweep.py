"""The sweep's bookkeeping around its trials: the study (which trials are still to run, resuming where a killed or
cancelled sweep stopped), one MLflow run per trial nested under the sweep's run, what each trial scored, and the
report (a table of trials and three images on the sweep's run, a Prefect table artifact, the best model registered
with the alias `best`).

A trial's key is its values: a finished (complete or pruned) trial is never run again by the same sweep, and a
trial that was running when its sweep died is run again under the same key, so it continues from its last
checkpoint (its output folder is named by the key). Only the sweep registers a model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from . import tracking
from .common import digest, pipeline_home
from .sweep_space import Dimension, Objective

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
DEFAULT_TPE_TRIALS = 8
BEST = "best"
"""The alias the sweep gives its best model's registered version(s)."""


def trial_key(assignment: dict) -> str:
    return digest(sorted(assignment.items()))[:16]


@dataclass
class Plan:
    """What this sweep run still has to do."""

    finished: int
    """Trials complete or pruned before this run started (never run again)."""
    queue: list = field(default_factory=list)
    """Assignments to run first: a grid's unvisited points, or the trials a dead sweep left running."""
    budget: int = 0
    """Trials this run may start."""


def take_over(study, flow_run_id: str | None) -> list[dict]:
    """Make this flow run the sweep's owner. Trials left RUNNING by an earlier run are recorded as failed
    (interrupted), their MLflow runs and those runs' children ended KILLED; returns their assignments, to be run
    again. A sweep whose owner is still running (the same sweep submitted twice) is refused."""
    from optuna.trial import TrialState

    owner = study.user_attrs.get("owner")
    if owner and owner != flow_run_id and _still_running(owner):
        raise RuntimeError(f"sweep {study.study_name} is running in flow run {owner}: wait for it to end, or "
                           "cancel it, before starting it again")
    study.set_user_attr("owner", flow_run_id)
    again = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.set_user_attr("interrupted", sorted({*study.user_attrs.get("interrupted", []), t.number}))
        study.tell(t.number, state=TrialState.FAIL)
        if t.user_attrs.get("mlflow_run_id"):
            end_killed(t.user_attrs["mlflow_run_id"], "interrupted")
        again.append(dict(t.params))
    return again


def end_killed(run_id: str, state: str) -> None:
    """A trial's MLflow run, and its children still RUNNING, ended KILLED (the trial tagged `state`)."""
    try:
        c = tracking.client()
        tracking.set_tags(run_id, {"sweep.state": state})
        for child in c.search_runs([c.get_run(run_id).info.experiment_id],
                                   f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"):
            c.set_terminated(child.info.run_id, "KILLED")
        c.set_terminated(run_id, "KILLED")
    except Exception:  # the store may have lost it; the study's record is what counts
        pass


def _still_running(flow_run_id: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except ObjectNotFound:  # not on this server (a command-line run's temporary one): nobody is running it
        return False
    return state is not None and not state.is_final()


def repeated(study, trial, key: str) -> str | None:
    """A trial whose values a finished trial already had (TPE proposes a point twice; categorical spaces make it
    likely) takes that trial's result without training; one whose values are training now is not started.
    Returns what was done, or None for a trial to run."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if t.number == trial.number or t.user_attrs.get("key") != key:
            continue
        trial.set_user_attr("key", key)
        trial.set_user_attr("note", f"the values of trial {t.number}")
        if t.state == TrialState.COMPLETE:
            study.tell(trial, t.value)
            return f"has the values of trial {t.number}: its {t.value:.4g} is reused, nothing trained"
        study.tell(trial, state=TrialState.PRUNED if t.state == TrialState.PRUNED else TrialState.FAIL)
        return f"has the values of trial {t.number} ({t.state.name.lower()}): not trained again"
    return None


def plan(study, dims: list[Dimension], method: str, trials: int | None, again: list[dict]) -> Plan:
    """Which assignments to run now: a grid's points in order not yet finished (up to `trials`), or for TPE the
    interrupted ones first and then what the sampler proposes, up to `trials` finished in all."""
    from optuna.trial import TrialState

    from .sweep_space import combinations

    done = {t.user_attrs.get("key") for t in study.get_trials(deepcopy=False,
                                                               states=(TrialState.COMPLETE, TrialState.PRUNED))}
    # Enqueued by a sweep run that died before asking for them: `ask` hands them out first, so not enqueued again.
    waiting = {trial_key(t.system_attrs.get("fixed_params") or {})
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    if method == "grid":
        points = combinations(dims, "grid")
        wanted = points[:trials] if trials else points
        todo = [p for p in wanted if trial_key(p) not in done]
        return Plan(len(wanted) - len(todo), [p for p in todo if trial_key(p) not in waiting], len(todo))
    queue = [a for a in again if trial_key(a) not in done | waiting]
    return Plan(len(done), queue, max(0, (trials or DEFAULT_TPE_TRIALS) - len(done)))


def sweep_run(experiment: str, study, params: dict) -> str:
    """The sweep's MLflow run: made on the study's first run (its id kept on the study), reopened on a resume, so
    every trial of the sweep nests under one run."""
    run_id = study.user_attrs.get("mlflow_run_id")
    client = tracking.client()
    if run_id:
        try:
            client.update_run(run_id, status="RUNNING")
            if "error" in client.get_run(run_id).data.tags:  # the earlier run's end; its error.txt stays as history
                client.set_tag(run_id, "previous_error", client.get_run(run_id).data.tags["error"])
                client.delete_tag(run_id, "error")
            return run_id
        except Exception:  # a store that lost it (cleared): start a new one
            pass
    run_id = tracking.start_run(experiment, study.study_name, tags={**tracking.flow_run_tags(), "stage": "sweep",
                                                                     "sweep": study.study_name})
    tracking.log_params(run_id, params)
    study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def show_sweep_columns(run_id: str, dims: list[Dimension], objective: Objective) -> None:
    """The experiment's training view shows each swept value, the objective, the state, duration and tokens/s."""
    tracking.show_columns(run_id, [objective.metric, "duration_s", "tokens_per_second"])
    c = tracking.client()
    exp = c.get_experiment(c.get_run(run_id).info.experiment_id)
    key = f"mlflow.sharedViewState.{tracking.TRAINING_VIEW}"
    view = json.loads(exp.tags[key])
    columns = view["selectedColumns"]
    wanted = [f"params.`trial.{d.name}`" for d in dims] + ["tags.`sweep.state`", "tags.`sweep.trial`"]
    view["selectedColumns"] = [w for w in wanted if w not in columns] + columns
    c.set_experiment_tag(exp.experiment_id, key, json.dumps(view))


def begin_trial(study, trial, assignment: dict, sweep_run_id: str, experiment: str, flow_run_id: str | None,
                objective: Objective, prune) -> dict:
    """The trial's record (key, output folder, MLflow run under the sweep's) and the pretrain parameters that
    belong to it: where it trains, which run it logs into, and the hook that reports its evaluations."""
    key = trial_key(assignment)
    out = pipeline_home() / "sweeps" / study.study_name / key
    run_id = tracking.start_run(experiment, f"trial {trial.number}", sweep_run_id,
                                tags={"stage": "pretrain", "sweep": study.study_name, "sweep.trial": trial.number,
                                      "sweep.state": "running", "sweep.key": key})
    tracking.log_params(run_id, {f"trial.{k}": v for k, v in assignment.items()})
    for name, value in (("key", key), ("output_dir", str(out)), ("mlflow_run_id", run_id),
                        ("sweep_flow_run_id", flow_run_id), ("started", time.time())):
        trial.set_user_attr(name, value)
    hook = None
    if prune is not False and objective.prunable:  # the engine finds the store as the sweep does (environment)
        hook = {"hook": "tasks.pruning:reporter",
                "kwargs": {"study": study.study_name, "trial": trial.number, "metric": objective.metric,
                           "prune": prune}}
    return {"output_dir": str(out), "mlflow_run_id": run_id, "on_evaluation": hook}


@dataclass
class Outcome:
    state: str
    """complete, pruned or failed"""
    value: float | None = None
    note: str = ""


def outcome(flow_state, run_id: str, objective: Objective) -> Outcome:
    """What a trial's pretrain flow run came to: its objective, pruned (with the reason), or failed (with the
    error)."""
    if not flow_state.is_completed():
        try:
            flow_state.result()
        except BaseException as e:  # the trial's own error, not the sweep's
            return Outcome("failed", note=f"{type(e).__name__}: {e}"[:500])
        return Outcome("failed", note=str(flow_state.message or flow_state.name))
    from prefect.exceptions import MissingResult

    try:
        stopped_by = flow_state.result().get("stopped_by")
    except MissingResult:
        # A completed state handed back without its data (seen once on two loaded cores: the trial's run had
        # finished and logged everything; the state came from the API, and results are not persisted). The trial's
        # MLflow run holds the same answer: the flow tags it with the reason it stopped.
        stopped_by = tracking.client().get_run(run_id).data.tags.get("training.stopped_by")
    if stopped_by:
        return Outcome("pruned", note=stopped_by)
    metrics = tracking.client().get_run(run_id).data.metrics
    value = metrics.get(objective.metric)
    if value is None or not math.isfinite(value):
        return Outcome("failed", note=f"the trial logged no finite {objective.metric} (it logged: "
                                      f"{', '.join(sorted(metrics)) or 'nothing'})")
    return Outcome("complete", value=float(value))


def end_trial(study, trial, result: Outcome, run_id: str) -> dict:
    """Record the outcome on the study and the trial's MLflow run; returns the trial's row of the report."""
    from optuna.trial import TrialState

    if result.note:
        trial.set_user_attr("note", result.note)
    trial.set_user_attr("duration_s", time.time() - trial.user_attrs["started"])
    if result.state == "complete":
        study.tell(trial, result.value)
    else:
        study.tell(trial, state=TrialState.PRUNED if result.state == "pruned" else TrialState.FAIL)
    c = tracking.client()
    tracking.set_tags(run_id, {"sweep.state": result.state, **({"sweep.note": result.note} if result.note else {})})
    tracking.log_metrics(run_id, {"duration_s": trial.user_attrs["duration_s"],
                                  **_throughput(run_id)})
    c.set_terminated(run_id, "FAILED" if result.state == "failed" else "FINISHED")
    return row(study.get_trials(deepcopy=False)[trial.number])


def _throughput(run_id: str) -> dict:
    """Mean training tokens/s and the steps trained, from the trial's pretrain child run."""
    c = tracking.client()
    children = c.search_runs([c.get_run(run_id).info.experiment_id],
                             f"tags.mlflow.parentRunId = '{run_id}' and attributes.run_name = 'pretrain'")
    if not children:
        return {}
    child = children[0].info.run_id
    rates = [m.value for m in c.get_metric_history(child, "tokens_per_second")]
    steps = [m.step for m in c.get_metric_history(child, "train_loss")]
    return {**({"tokens_per_second": sum(rates) / len(rates)} if rates else {}),
            **({"steps_trained": max(steps)} if steps else {})}


def row(t) -> dict:
    """One trial in the report: its values, objective, state, duration, tokens/s, steps and note."""
    metrics = {}
    if t.user_attrs.get("mlflow_run_id"):
        try:
            metrics = tracking.client().get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        except Exception:
            metrics = {}
    return {"trial": t.number, **{k: v for k, v in t.params.items()},
            "objective": t.value, "state": STATES.get(t.state.name, t.state.name.lower()),
            "duration_s": _rounded(t.user_attrs.get("duration_s"), 1),
            "tokens_per_second": _rounded(metrics.get("tokens_per_second"), 0),
            "steps": int(metrics.get("steps_trained", 0)),
            "note": t.user_attrs.get("note", "")}


def _rounded(value, digits: int):
    return None if value is None or not math.isfinite(value) else round(value, digits)


def rows(study) -> list[dict]:
    interrupted = set(study.user_attrs.get("interrupted", []))
    return [{**row(t), **({"note": "interrupted, run again"} if t.number in interrupted else {})}
            for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]


def line(t_row: dict, dims: list[Dimension], objective: Objective, total: int) -> str:
    """The one line a watching terminal shows when a trial ends."""
    values = ", ".join(f"{d.name}={_short(t_row.get(d.name))}" for d in dims)
    head = f"trial {t_row['trial']} ({total} in the sweep) {t_row['state']}: {values}"
    if t_row["state"] == "complete":
        return f"{head} -> {objective.metric} {t_row['objective']:.4g} in {t_row['duration_s'] or 0:.0f} s"
    return f"{head} -> {t_row['note']}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def publish_table(study, key: str, objective: Objective) -> None:
    """The Prefect table artifact of the trials (a new version each time a trial ends)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=rows(study), key=key,
                          description=f"Trials of sweep {study.study_name}: {objective.metric} "
                                      f"({objective.direction}), state, duration and tokens/s")
