"""downstream: does pretraining help? The trained model (ELECTRA: its discriminator) fine-tuned on each labelled
task over seeds x a learning-rate grid, beside the same architecture and tokenizer from random initialisation
(cached under PIPELINE_HOME/downstream-baselines, so a sweep of pretraining runs pays for it once), each arm at its
best learning rate on a validation split (lmcore.downstream does the work).

Logged: on the parent run `downstream.<task>.accuracy` / `_std`, `.f1`, `.mcc` (mean and std over seeds),
`.learning_rate` (the rate chosen on validation), the same under `downstream.<task>.random_init.`, and
`downstream.<task>.gain` (pretrained - random-init test accuracy); one child run per task with every seed's
figures; one image per parent run (`downstream.png`, pretrained vs random-init per task, mean +- std); a Prefect
table artifact.
"""

from __future__ import annotations

import json
import re

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from lmcore.downstream import (DEFAULT_SEEDS, METRICS, TaskSpec, compare, default_learning_rates, encoder_folder,
                               fine_tune_args, load_task)

from . import tracking
from .common import logger, pipeline_home

SUMMARY = (*METRICS, *(f"{m}_std" for m in METRICS), "learning_rate", "validation_accuracy")
"""Figures of one arm on the parent run: downstream.<task>.<figure> (random init: downstream.<task>.random_init.<figure>)."""
PROMOTE_METRICS = METRICS
"""What promote_on may name besides perplexity: downstream.<task>.<metric>."""


def baseline_cache():
    return pipeline_home() / "downstream-baselines"


def flat_figures(name: str, result: dict) -> dict:
    """One task's result as the parent run's metric names."""
    out = {f"downstream.{name}.{k}": result["pretrained"][k] for k in SUMMARY}
    out.update({f"downstream.{name}.random_init.{k}": result["random_init"][k] for k in SUMMARY})
    out[f"downstream.{name}.gain"] = result["gain"]
    return out


def version_tags(figures: dict, task_keys: dict) -> dict:
    """What a registered version carries: the figures (4 decimals) and each task's key (data, split, settings,
    seeds, grid), so a later comparison can tell whether they were measured alike."""
    tags = {k: f"{v:.4f}" if "learning_rate" not in k else f"{v:g}" for k, v in figures.items()}
    tags.update({f"downstream.{name}.task_key": key for name, key in task_keys.items()})
    return tags


@task(name="downstream", cache_policy=NO_CACHE)
def downstream(model_type: str, model_dir: str, tasks: list, seeds: int = DEFAULT_SEEDS,
               learning_rates: list | None = None, parent_run_id: str | None = None, label: str = "model",
               prefix: str = "") -> dict:
    """Fine-tune `model_dir` on each labelled task of `tasks` (entries as tasks.inputs.check_downstream returns
    them) and compare with random initialisation. Returns {"figures": parent-run metrics, "tags": for the
    registered version, "task_keys", "results": per task}. `prefix` ("champion.") names a second model's figures
    on the same parent run."""
    encoder = encoder_folder(model_dir)  # a folder with no encoder fails here, before any fine-tuning
    learning_rates = list(learning_rates or default_learning_rates(encoder))
    loaded = [load_task(TaskSpec.from_entry(e)) for e in tasks]
    figures, keys, results = {}, {}, {}
    for t in loaded:
        for f, counts in t.skipped.items():
            logger().warning("downstream %s: %s: left out %s", t.name, f,
                             ", ".join(f"{n} row(s) with {why}" for why, n in counts.items()))
        logger().info("downstream %s: %s rows train / %s validation / %s test, labels %s; %s seed(s) x lr %s, %s",
                      t.name, len(t.train), len(t.validation), len(t.test), t.labels, seeds, learning_rates, label)
        with tracking.child_run(parent_run_id, f"downstream {t.name}{f' ({label})' if prefix else ''}") as run_id:
            result = compare(model_type, str(encoder), t, seeds, learning_rates, cache_dir=baseline_cache(),
                             progress=logger().info)
            _log_task_run(run_id, t, result, model_dir, seeds, learning_rates)
        results[t.name], keys[t.name] = _without_runs(result), result["task_key"]
        figures.update(flat_figures(t.name, result))
        logger().info("downstream %s: pretrained accuracy %.4f +- %.4f (lr %g), random init %.4f +- %.4f (lr %g%s): "
                      "gain %+.4f", t.name, result["pretrained"]["accuracy"], result["pretrained"]["accuracy_std"],
                      result["pretrained"]["learning_rate"], result["random_init"]["accuracy"],
                      result["random_init"]["accuracy_std"], result["random_init"]["learning_rate"],
                      ", cached" if result["random_init"]["cached"] else "", result["gain"])
    tracking.log_metrics(parent_run_id, {prefix + k: v for k, v in figures.items()})
    if parent_run_id and not prefix:
        tracking.set_tags(parent_run_id, {f"downstream.{n}.task_key": k for n, k in keys.items()})
        tracking.show_columns(parent_run_id, [f"downstream.{n}.{m}" for n in keys
                                              for m in ("accuracy", "random_init.accuracy", "gain")])
        log_comparison_chart(parent_run_id, results)
    _table_artifact(results, label, model_dir)
    return {"figures": figures, "tags": version_tags(figures, keys), "task_keys": keys, "results": results}


def _without_runs(result: dict) -> dict:
    return {**result, "pretrained": {k: v for k, v in result["pretrained"].items() if k != "runs"},
            "random_init": {k: v for k, v in result["random_init"].items() if k != "runs"}}


def _log_task_run(run_id, t, result: dict, model_dir: str, seeds: int, learning_rates: list) -> None:
    """The child run: settings, every seed's validation and test figures per arm and rate, both summaries."""
    if not run_id:
        return
    tracking.log_params(run_id, {"model_dir": model_dir, "seeds": seeds, "learning_rates": learning_rates,
                                 "task_key": result["task_key"], "random_init_key": result["random_init_key"][:32],
                                 "random_init_cached": result["random_init"]["cached"],
                                 **{f"task.{k}": v for k, v in t.summary().items()},
                                 "args": fine_tune_args(t, None)})
    for arm in ("pretrained", "random_init"):
        for r in result[arm]["runs"]:
            lr = f"{r['learning_rate']:g}"
            tracking.log_metrics(run_id, {f"{arm}.lr_{lr}.{split}_{m}": r[split][m]
                                          for split in ("validation", "test") for m in METRICS if m in r[split]},
                                 step=r["seed"])
        tracking.log_metrics(run_id, {f"{arm}.{k}": result[arm][k] for k in SUMMARY})
    tracking.log_metrics(run_id, {"gain": result["gain"]})
    tracking.client().log_text(run_id, json.dumps(result, indent=1, default=str), "downstream_runs.json")


def log_comparison_chart(run_id: str | None, results: dict, name: str = "downstream.png") -> str | None:
    """One image: per task, pretrained vs random-init test accuracy (mean +- std over seeds, each at its best
    rate on validation), the gain written above each pair."""
    if not run_id or not results:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no screen; and never a GUI backend inside a worker
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 2.2 * len(names)), 3.8))
    for offset, arm, label, color in ((-0.2, "pretrained", "pretrained", "tab:blue"),
                                      (0.2, "random_init", "random init", "tab:gray")):
        means = [results[n][arm]["accuracy"] for n in names]
        stds = [results[n][arm]["accuracy_std"] for n in names]
        lrs = [results[n][arm]["learning_rate"] for n in names]
        bars = ax.bar(x + offset, means, 0.38, yerr=stds, capsize=4, color=color, label=label)
        for bar, lr in zip(bars, lrs):
            ax.annotate(f"lr {lr:g}", (bar.get_x() + bar.get_width() / 2, 0.02), ha="center", fontsize=7,
                        color="white")
    for i, n in enumerate(names):
        top = max(results[n][a]["accuracy"] + results[n][a]["accuracy_std"] for a in ("pretrained", "random_init"))
        ax.annotate(f"gain {results[n]['gain']:+.3f}", (i, min(top + 0.03, 1.02)), ha="center", fontsize=9)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(f"{tracking.client().get_run(run_id).info.run_name}: does pretraining help?", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        tracking.client().log_figure(run_id, fig, name)
    finally:
        plt.close(fig)
    return name


def _table_artifact(results: dict, label: str, model_dir: str) -> None:
    if TaskRunContext.get() is None:  # run bare (task.fn()) there is no run to attach the table to
        return
    rows = []
    for name, r in results.items():
        for arm in ("pretrained", "random_init"):
            a = r[arm]
            rows.append({"task": name, "arm": arm.replace("_", " "), "accuracy": f"{a['accuracy']:.4f} ± "
                         f"{a['accuracy_std']:.4f}", "f1": f"{a['f1']:.4f} ± {a['f1_std']:.4f}",
                         "mcc": f"{a['mcc']:.4f} ± {a['mcc_std']:.4f}", "learning rate": f"{a['learning_rate']:g}",
                         "gain": f"{r['gain']:+.4f}" if arm == "pretrained" else ""})
    create_table_artifact(key=re.sub(r"[^a-z0-9-]+", "-", f"downstream-{label}".lower()).strip("-"), table=rows,
                          description=f"Downstream fine-tuning of {label} ({model_dir}) vs random initialisation")


@task(name="champion_downstream", cache_policy=NO_CACHE)
def champion_downstream(champion: dict, model_type: str, model_dir: str, tasks: list, seeds: int = DEFAULT_SEEDS,
                        learning_rates: list | None = None, parent_run_id: str | None = None) -> dict:
    """The champion's downstream figures (downstream.<task>.<figure>) for a promote_on decision: the ones recorded on its registered version
    when they were measured with the same task key (same data, split, settings, seeds and grid), else measured
    now in this run (logged on the parent run as champion.downstream.<task>...)."""
    from .registry import recorded_downstream

    learning_rates = list(learning_rates or default_learning_rates(model_dir))
    loaded = [load_task(TaskSpec.from_entry(e)) for e in tasks]
    keys = {t.name: t.key(seeds, learning_rates, fine_tune_args(t, None)) for t in loaded}
    recorded = recorded_downstream(champion, keys)
    if recorded is not None:
        logger().info("champion %s: downstream figures recorded on its version with the same task key(s), reused",
                      champion["version"])
        tracking.log_metrics(parent_run_id, {"champion." + k: v for k, v in recorded.items()})
        tracking.set_tags(parent_run_id, {"champion_downstream": "recorded on its version"})
        return recorded
    out = downstream.fn(model_type, model_dir, tasks, seeds, learning_rates, parent_run_id,
                        label=f"champion v{champion['version']}", prefix="champion.")
    tracking.set_tags(parent_run_id, {"champion_downstream": "measured in this run"})
    return out["figures"]

