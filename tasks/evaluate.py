"""evaluate: perplexity (and for ELECTRA the generator's perplexity and the discriminator's replaced-token metrics)
on the eval split, logged to MLflow and published as a Prefect table artifact.

A model just trained already carries its eval result (the engine evaluates at the end of training on the same eval
split), so it is not evaluated twice; a saved model (the champion, say) is evaluated by the engine's `eval`
command with the same fixed mask seed, so two models' figures on one eval split are comparable.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from . import tracking
from .common import logger, pipeline_home
from .pretrain import engine_env, run_engine

METRICS = ("perplexity", "eval_loss", "eval_tokens", "generator_perplexity", "generator_loss", "discriminator_loss",
           "discriminator_accuracy", "discriminator_auc")


def engine_eval(model_type: str, model_dir: str, eval_file: str) -> dict:
    import sys

    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "lmcore", "eval", "--model-type", model_type, "--model-name", model_dir,
                   "--eval", eval_file, "--output-dir", tmp, "--result-file", str(result_file),
                   "--set", f"cache_dir={pipeline_home() / 'engine-cache'}"]
        run_engine(command, engine_env(1, None), f"evaluating {model_dir}")
        return json.loads(result_file.read_text())


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(model_type: str, model_dir: str, eval_file: str, result: dict | None = None, label: str = "model",
             parent_run_id: str | None = None, prefix: str = "") -> dict:
    """Metrics of `model_dir` on `eval_file` (`result`: figures the engine already computed for it). With a
    `prefix` (e.g. "champion_") the parent run gets prefixed names, so two models can sit on one run."""
    with tracking.child_run(parent_run_id, f"evaluate {label}") as run_id:
        if result is None:
            result = engine_eval(model_type, model_dir, eval_file)
        metrics = {k: float(result[k]) for k in METRICS if isinstance(result.get(k), (int, float))}
        if "perplexity" not in metrics:
            raise RuntimeError(f"the evaluation of {model_dir} returned no perplexity: {result}")
        tracking.log_params(run_id, {"model_dir": model_dir, "eval_file": eval_file})
        tracking.log_metrics(run_id, metrics)
        tracking.log_metrics(parent_run_id, {prefix + k: v for k, v in metrics.items()})
    logger().info("evaluate %s: %s", label, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if TaskRunContext.get() is not None:  # run bare (task.fn()) there is no run to attach the table to
        create_table_artifact(
            key=re.sub(r"[^a-z0-9-]+", "-", f"evaluation-{label}".lower()).strip("-"),
            table=[{"metric": k, "value": round(v, 6)} for k, v in metrics.items()],
            description=f"Evaluation of {label} ({model_dir}) on {eval_file}")
    return metrics


def main(argv=None) -> None:
    """`python -m tasks.evaluate`: evaluate a saved model; under `mlflow run` the metrics go to its run."""
    import argparse
    import os

    p = argparse.ArgumentParser(prog="python -m tasks.evaluate", description=main.__doc__)
    p.add_argument("--model-type", default="bert")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--eval-file", required=True)
    ns = p.parse_args(argv)
    result = engine_eval(ns.model_type, ns.model_dir, ns.eval_file)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        tracking.log_params(run_id, {"model_type": ns.model_type, "model_dir": ns.model_dir,
                                     "eval_file": ns.eval_file})
        tracking.log_metrics(run_id, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
