"""The MLflow run structure of the pipeline, in one place: where the store is, experiments that open on MLflow's
training view, one parent run per flow run, one child run per task, how runs end (FINISHED, FAILED, KILLED; never
left RUNNING), flattened parameters.

Runs are addressed by id through `MlflowClient`, never through MLflow's "active run" state, so a task running in a
worker thread and an engine process under torchrun all log into the run they were handed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's own store: sqlite:///<repo>/mlflow.db (what scripts/up serves)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'mlflow.db'}"


def artifact_root() -> Path:
    """Artifacts live beside a sqlite store (<dir of mlflow.db>/mlartifacts), whatever the current directory; with
    a database server (postgresql://, mysql://) in PIPELINE_HOME/mlartifacts, which every machine of a team
    reaches, so a model registered on one machine loads on another."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts"
    if uri.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql", "mssql"):
        from .common import pipeline_home

        return pipeline_home() / "mlartifacts"
    return REPO / "mlartifacts"


def client():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow.tracking import MlflowClient

    # The registry URI too: left out, MlflowClient takes MLflow's process-wide one, which may name another store.
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def use_store() -> None:
    """Point MLflow's module-level API (log_model, load_model) at the same store as `client()`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""Makes the MLflow UI open the experiment on its training runs, not on the GenAI (traces) pages."""
TRAINING_VIEW = "training"
"""The runs-table view stored on every experiment (`<experiment URL>?viewStateShareKey=training`)."""
_VIEW = {"orderByKey": "attributes.start_time", "orderByAsc": False,
         "selectedColumns": ["metrics.`perplexity`", "params.`register_as`", "params.`model_type`",
                             "params.`corpus.documents`", "metrics.`discriminator_accuracy`",
                             "metrics.`discriminator_baseline_accuracy`", "tags.`discriminator.learned`",
                             "metrics.`champion_perplexity`", "metrics.`challenger_perplexity`", "tags.`decision`",
                             "metrics.`downstream.rotten_tomatoes.accuracy`",
                             "metrics.`downstream.rotten_tomatoes.random_init.accuracy`",
                             "metrics.`downstream.rotten_tomatoes.gain`"]}
"""The columns of the training view; a run with downstream results adds its tasks' columns (`show_columns`)."""


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created when missing, with the tags that make the UI show training runs."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, artifact_location=(artifact_root() / name).as_uri(),
                                       tags={**EXPERIMENT_TAGS, **_view_tag()})
        except Exception:  # created meanwhile by a concurrent flow run
            exp = c.get_experiment_by_name(name)
    for key, value in {**EXPERIMENT_TAGS, **_view_tag()}.items():  # an experiment created by `mlflow run`, say
        if key not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _view_tag() -> dict:
    return {f"mlflow.sharedViewState.{TRAINING_VIEW}": json.dumps(_VIEW)}


def show_columns(run_id: str | None, metrics: list[str]) -> None:
    """Add metric columns (a downstream task's accuracy, random-init accuracy and gain) to the training view of
    `run_id`'s experiment, after the columns it already shows."""
    if not run_id:
        return
    c = client()
    exp = c.get_experiment(c.get_run(run_id).info.experiment_id)
    key = f"mlflow.sharedViewState.{TRAINING_VIEW}"
    view = json.loads(exp.tags.get(key) or json.dumps(_VIEW))
    columns = view.setdefault("selectedColumns", [])
    wanted = [f"metrics.`{m}`" for m in metrics if f"metrics.`{m}`" not in columns]
    if wanted:
        c.set_experiment_tag(exp.experiment_id, key, json.dumps({**view, "selectedColumns": columns + wanted}))


def training_view_url(ui: str, experiment: str) -> str:
    """Where experiment `experiment`'s runs table opens in training mode, with the perplexity columns shown."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id(experiment)}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={TRAINING_VIEW}")


def start_run(experiment: str, name: str, parent_id: str | None = None, tags: dict | None = None) -> str:
    tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    return client().create_run(experiment_id(experiment), run_name=name, tags=tags).info.run_id


def end_run(run_id: str, error: BaseException | None) -> None:
    """FINISHED, FAILED on an exception, KILLED on an interruption (Ctrl-C, cancellation, SIGTERM)."""
    status = "FINISHED" if error is None else ("FAILED" if isinstance(error, Exception) else "KILLED")
    c = client()
    if error is not None:
        c.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        if isinstance(error, Exception):  # the screen shows the message only (tasks/runlog.py): the traceback is here
            import traceback

            try:
                c.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")
            except Exception:  # the run must still end, with its status, whatever the artifact store says
                pass
    c.set_terminated(run_id, status)


@contextlib.contextmanager
def tracked(run_id: str):
    """End `run_id` when the block ends, with the status the way out of the block implies."""
    try:
        yield run_id
    except BaseException as e:
        end_run(run_id, e)
        raise
    end_run(run_id, None)


@contextlib.contextmanager
def child_run(parent_id: str | None, name: str, tags: dict | None = None):
    """A child run of `parent_id` for one task (None: tracking is off for this call, yields None)."""
    if not parent_id:
        yield None
        return
    parent = client().get_run(parent_id)
    experiment = client().get_experiment(parent.info.experiment_id).name
    run_id = start_run(experiment, name, parent_id, tags)
    with tracked(run_id):
        yield run_id


def flow_run_tags() -> dict:
    from prefect.runtime import deployment, flow_run

    return {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.flow_name": flow_run.flow_name, "prefect.deployment": deployment.name,
            "prefect.deployment_id": deployment.id}


@contextlib.contextmanager
def flow_parent_run(experiment: str, tags: dict | None = None, run_id: str | None = None):
    """The flow run's parent run in `experiment`, ended FINISHED / FAILED / KILLED with the flow. `run_id`: an
    existing run to log into instead (tagged with the flow run, not ended).

    Under `mlflow run` (MLFLOW_RUN_ID set) the run it made is the parent when it is in `experiment` (`mlflow run
    --experiment-name pretrain`), and `mlflow run` ends it. A run `mlflow run` put elsewhere (the Default
    experiment, when no --experiment-name is given) is not where the pipeline's runs belong: it gets a tag and a
    note pointing at the parent run made in `experiment`."""
    from prefect.runtime import flow_run

    tags = {k: str(v) for k, v in {**flow_run_tags(), **(tags or {})}.items() if v is not None}
    if run_id:
        set_tags(run_id, {f"{tags.get('stage', 'flow')}.{k}": v for k, v in tags.items() if k != "stage"})
        yield run_id
        return
    adopted = os.environ.get("MLFLOW_RUN_ID")
    if adopted and client().get_run(adopted).info.experiment_id == experiment_id(experiment):
        set_tags(adopted, tags)
        yield adopted
        return
    run_id = start_run(experiment, flow_run.name or experiment, tags=tags)
    if adopted:
        note = (f"The pipeline's runs are in experiment {experiment!r}: parent run {run_id} (pass "
                f"--experiment-name {experiment} to `mlflow run` to make this run the parent).")
        set_tags(adopted, {"pipeline.parent_run_id": run_id, "pipeline.experiment": experiment,
                           "mlflow.note.content": note})
        print(note, flush=True)
    with tracked(run_id):
        yield run_id


def flatten(d: dict, prefix: str = "") -> dict:
    """{"config": {"hidden_size": 32}} -> {"config.hidden_size": "32"}: MLflow params are flat strings."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def log_params(run_id: str | None, params: dict) -> None:
    """Log params; a name already logged with the same value is fine, so retries and resumes can log again."""
    if not run_id:
        return
    from mlflow.entities import Param

    c = client()
    have = c.get_run(run_id).data.params
    items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in have]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(run_id: str | None, metrics: dict, step: int = 0) -> None:
    if not run_id:
        return
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
    client().log_batch(run_id, metrics=items)


def set_tags(run_id: str | None, tags: dict) -> None:
    if not run_id:
        return
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


CURVES = (("train_loss", "training loss"), ("eval_loss", "evaluation loss"), ("learning_rate", "learning rate"))
"""The engine's per-step metrics drawn by `log_training_curves`, each in its own panel."""


def log_training_curves(run_id: str | None, also_on: tuple = (), name: str = "training_curves.png") -> str | None:
    """Draw the per-step metrics `run_id` holds (loss, evaluation loss, learning rate against the step) into one
    PNG and log it as `name` on `run_id` and on each run of `also_on` (the flow's parent run, where a person looks
    first). Returns the artifact name, or None when the run has no step metrics to draw."""
    if not run_id:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no screen; and never a GUI backend inside a worker
    import matplotlib.pyplot as plt

    c = client()
    series = [(label, sorted((m.step, m.value) for m in c.get_metric_history(run_id, key)))
              for key, label in CURVES]
    series = [(label, points) for label, points in series if points]
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.4 * len(series)), sharex=True, squeeze=False)
    for ax, (label, points) in zip(axes[:, 0], series):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.suptitle(c.get_run(run_id).info.run_name or run_id)
    fig.tight_layout()
    try:
        for target in (run_id, *[r for r in also_on if r]):
            c.log_figure(target, fig, name)
    finally:
        plt.close(fig)
    return name


def main(argv=None) -> None:
    """`python -m tasks.tracking EXPERIMENT... [--ui URL]`: create the experiments (tagged for the training view)
    and print the URL of each one's training view (scripts/up runs it)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tasks.tracking", description=main.__doc__)
    p.add_argument("experiments", nargs="+")
    p.add_argument("--ui", default="http://127.0.0.1:5000")
    ns = p.parse_args(argv)
    for name in ns.experiments:
        print(f"{name}: {training_view_url(ns.ui, name)}")


if __name__ == "__main__":
    main()
