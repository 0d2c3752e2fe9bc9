"""What a sweep leaves on its MLflow run for a person to read: the table of trials (`trials.json`, through
`log_table`, so the UI shows it as a table), the objective against each swept value, every trial's training curves
on one plot, and Optuna's parameter importances when enough trials finished; and the best trial's model registered
with the alias `best`, tagged with the sweep."""

from __future__ import annotations

import math

from . import tracking
from .common import logger
from .sweep import BEST, rows
from .sweep_space import Dimension, Objective

TABLE = "trials.json"


def log_report(run_id: str, study, dims: list[Dimension], objective: Objective) -> list[str]:
    """Log the table, the images and the summary metrics on the sweep's run; returns the artifact names."""
    table = rows(study)
    _replace_table(run_id, table)
    summary = {"trials_complete": sum(r["state"] == "complete" for r in table),
               "trials_pruned": sum(r["state"] == "pruned" for r in table),
               "trials_failed": sum(r["state"] == "failed" for r in table),
               "steps_trained": sum(r["steps"] for r in table)}
    best = best_trial(study, objective)
    if best is not None:
        summary[f"best_{objective.metric}"] = best.value
        summary["best_trial"] = best.number
    tracking.log_metrics(run_id, summary)
    logged = [TABLE]
    for name, draw in (("objective_vs_parameters.png", _objective_plot),
                       ("training_curves.png", _curves_plot), ("parameter_importances.png", _importance_plot)):
        fig = draw(study, table, dims, objective)
        if fig is not None:
            import matplotlib.pyplot as plt

            try:
                tracking.client().log_figure(run_id, fig, name)
                logged.append(name)
            finally:
                plt.close(fig)
    return logged


def _replace_table(run_id: str, table: list[dict]) -> None:
    """`log_table` appends to a table that exists; a resumed sweep's table replaces its earlier one."""
    import pandas as pd
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = tracking.client()
    if any(f.path == TABLE for f in client.list_artifacts(run_id)):
        try:
            get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(TABLE)
        except Exception as e:  # a store that cannot delete keeps the rows twice; say so rather than fail
            logger().warning("could not replace %s on run %s (%s): it keeps the earlier rows too", TABLE, run_id, e)
    frame = pd.DataFrame(table)
    client.log_table(run_id, frame.astype({c: str for c in frame.columns if frame[c].dtype == object}), TABLE)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _objective_plot(study, table, dims, objective):
    points = [r for r in table if r["state"] in ("complete", "pruned")]
    if not points:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.4), squeeze=False)
    for ax, d in zip(axes[0], dims):
        for state, style in (("complete", {"marker": "o", "color": "tab:blue"}),
                             ("pruned", {"marker": "x", "color": "tab:gray"})):
            pts = [(r[d.name], _last_reported(study, r["trial"]) if state == "pruned" else r["objective"])
                   for r in points if r["state"] == state]
            pts = [(x, y) for x, y in pts if y is not None]
            if not pts:
                continue
            xs = [str(x) for x, _ in pts] if d.values is not None and not _numeric(d.values) else [x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], label=state + (" (last evaluation)" if state == "pruned" else ""),
                       **style)
        if d.log or (d.values is not None and _numeric(d.values) and _spread(d.values) > 20):
            ax.set_xscale("log")
        ax.set_xlabel(d.name)
        ax.set_ylabel(objective.metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{study.study_name}: {objective.metric} ({objective.direction}) per trial")
    fig.tight_layout()
    return fig


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _spread(values) -> float:
    positive = [v for v in values if v > 0]
    return max(positive) / min(positive) if len(positive) == len(values) and positive else 0.0


def _last_reported(study, number: int):
    values = study.trials[number].intermediate_values
    return values[max(values)] if values else None


def _curves_plot(study, table, dims, objective):
    """Training loss and evaluation perplexity of every trial against the step; pruned trials dashed."""
    c = tracking.client()
    series = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            children = c.search_runs([c.get_run(run_id).info.experiment_id],
                                     f"tags.mlflow.parentRunId = '{run_id}' and attributes.run_name = 'pretrain'")
        except Exception:
            continue
        if not children:
            continue
        child = children[0].info.run_id
        curves = {k: sorted((m.step, m.value) for m in c.get_metric_history(child, k))
                  for k in ("train_loss", "eval_perplexity")}
        series.append((t, curves))
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for t, curves in series:
        style = "--" if t.state.name == "PRUNED" else "-"
        for ax, key in zip(axes, ("train_loss", "eval_perplexity")):
            if curves[key]:
                steps, values = zip(*curves[key])
                ax.plot(steps, values, style, label=f"trial {t.number}", linewidth=1.2)
    for ax, label in zip(axes, ("training loss", "evaluation perplexity")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if any(curves["eval_perplexity"] for _, curves in series):
        axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{study.study_name}: every trial (dashed: pruned)")
    fig.tight_layout()
    return fig


def _importance_plot(study, table, dims, objective):
    """Optuna's importances (fANOVA) of the swept values for the objective; needs a few complete trials that
    differ."""
    import optuna

    if sum(r["state"] == "complete" for r in table) < 3:
        return None
    try:
        importances = optuna.importance.get_param_importances(study)
    except Exception as e:  # a single distinct value, a failed fit: the other images still say it
        logger().info("parameter importances not drawn: %s", e)
        return None
    if not importances:
        return None
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for {objective.metric}")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    return fig


def best_trial(study, objective: Objective):
    """The best complete trial (None when none completed)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    return (min if objective.direction == "minimize" else max)(done, key=lambda t: t.value)


def register_best(study, base: dict, objective: Objective, register_as: str | None, sweep_run_id: str) -> tuple:
    """The best complete trial's model registered under `register_as` (default <corpus name>-<model type>) with the
    alias `best`, tagged with the sweep (once: a resumed sweep whose best is registered already does not register it
    again). Returns (best trial or None, what was registered or None)."""
    from .inputs import default_model_name
    from .registry import register
    from .sweep_space import apply

    best = best_trial(study, objective)
    if best is None:
        logger().warning("sweep %s: no trial completed; nothing registered", study.study_name)
        return None, None
    params = apply(base, best.params)
    model_type = params.get("model_type", "bert")
    register_as = register_as or base.get("register_as") or default_model_name(base["corpus"], model_type)
    registered = None
    if not already_registered(register_as, study, best):
        registered = register(model_type, best.user_attrs["output_dir"], register_as,
                              mlm=params["args"].get("mlm", True),
                              tags={"sweep": study.study_name, "sweep.trial": best.number}, parent_run_id=sweep_run_id)
        mark_best(registered, study, best, objective)
    logger().info("best: trial %d, %s %.4g (%s), registered as %s with alias %r", best.number, objective.metric,
                  best.value, ", ".join(f"{k}={v}" for k, v in best.params.items()), register_as, BEST)
    return best, registered


def mark_best(registered: dict, study, trial, objective: Objective) -> None:
    """The alias `best` on the registered version(s) of the best trial, tagged with the sweep and its figure."""
    c = tracking.client()
    for name, version in registered.get("versions", {}).items():
        c.set_registered_model_alias(name, BEST, version)
        for key, value in {"sweep": study.study_name, "sweep.trial": trial.number,
                           f"sweep.{objective.metric}": trial.value}.items():
            c.set_model_version_tag(name, version, key, str(value))
        logger().info("%s version %s: alias %r (trial %d of sweep %s, %s %.4g)", name, version, BEST, trial.number,
                      study.study_name, objective.metric, trial.value)


def already_registered(register_as: str, study, trial) -> bool:
    """A resumed sweep whose best was registered by an earlier run does not register it twice."""
    c = tracking.client()
    try:
        names = [register_as] if c.search_model_versions(f"name='{register_as}'") else []
    except Exception:
        names = []
    from .registry import pair_names

    names += [n for n in pair_names(register_as) if _exists(c, n)]
    for name in names:
        try:
            mv = c.get_model_version_by_alias(name, BEST)
        except Exception:
            continue
        if mv.tags.get("sweep") == study.study_name and mv.tags.get("sweep.trial") == str(trial.number):
            return True
    return False


def _exists(c, name: str) -> bool:
    try:
        c.get_registered_model(name)
        return True
    except Exception:
        return False
