"""The MLflow run structure of the pipeline, in one place: where the store is, one parent run per flow run, one child
run per task, how runs end (FINISHED, FAILED, KILLED; never left RUNNING), flattened parameters, loss curves.

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
    """Artifacts live beside a sqlite store (<dir of mlflow.db>/mlartifacts), whatever the current directory."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts"
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


def experiment_id(name: str) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # The kind tag makes the MLflow UI open the experiment on its training-runs table, not the GenAI overview.
        return c.create_experiment(name, artifact_location=(artifact_root() / name).as_uri(),
                                   tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:  # created meanwhile by a concurrent flow run
        return c.get_experiment_by_name(name).experiment_id


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


def log_loss_curve(source_run: str, targets: list[str], workdir: Path) -> Path | None:
    """Plot the per-step training loss of `source_run` and log the image to every run in `targets`."""
    history = client().get_metric_history(source_run, "train_loss")
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted({m.step: m.value for m in history}.items())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "loss_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    for run_id in targets:
        if run_id:
            client().log_artifact(run_id, str(path))
    return path


def set_tags(run_id: str | None, tags: dict) -> None:
    if not run_id:
        return
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
