"""evaluate: perplexity (and for ELECTRA the generator's perplexity and the discriminator's replaced-token metrics)
of a saved model on the eval split, logged to MLflow and published as a Prefect table artifact.

Every model is scored the same way, by the engine's `eval` command in a fresh process (under torchrun when the run
trains on several processes: evaluation is sharded), with the same evaluation settings and the engine's fixed mask
seed: a model just trained and the champion it is compared with get figures computed alike, and each model has
exactly one perplexity in the logs and on the runs.
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

from lmcore import LanguageModelingArgs
from lmcore.data.corpus import known_file_hashes
from lmcore.spec import RunSpec

from . import tracking
from .common import logger, pipeline_home
from .launch import engine_command, engine_env, run_engine

METRICS = ("perplexity", "eval_loss", "eval_tokens", "generator_perplexity", "generator_loss", "discriminator_loss",
           "discriminator_accuracy", "discriminator_baseline_accuracy", "discriminator_precision",
           "discriminator_recall", "discriminator_f1", "discriminator_auc")
"""What goes to MLflow. The discriminator's accuracy alone flatters it: most tokens are originals, so answering
"original" everywhere scores the baseline accuracy (~0.85); precision, recall, F1 and AUC on replaced tokens say
whether it learned anything."""
BASELINE_MARGIN = 0.001
"""How far above its all-original baseline a discriminator's accuracy must be..."""
CHANCE_AUC = 0.5 + 0.01
"""...and its AUC above chance, to count as having learned something."""
EVAL_SETTINGS = ("dataset_type", "block_size", "max_seq_length", "sliding_window", "stride", "mlm",
                 "mlm_probability", "eval_batch_size", "strict_utf8", "mixed_precision", "discriminator_loss_weight")
"""The settings that decide what is scored and how; taken from the run's args, so two models on one eval split are
scored on the same blocks and masks (a registered champion carries no settings of its own)."""


def eval_settings(args: dict | None) -> dict:
    known = set(LanguageModelingArgs.__dataclass_fields__)
    return {k: v for k, v in (args or {}).items() if k in EVAL_SETTINGS and k in known}


def engine_eval(model_type: str, model_dir: str, eval_file: str, args: dict | None = None,
                nproc_per_node: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        result_file = Path(tmp) / "result.json"
        spec = RunSpec(model_type=model_type, model_name=model_dir, eval_files=[eval_file], output_dir=tmp,
                       args={**eval_settings(args), "cache_dir": str(pipeline_home() / "engine-cache")},
                       result_file=str(result_file), file_hashes=known_file_hashes([Path(eval_file)]))
        spec.save(Path(tmp) / "spec.json")
        run_engine(engine_command(Path(tmp) / "spec.json", nproc_per_node, "eval"), engine_env(nproc_per_node, None),
                   f"evaluating {model_dir}")
        return json.loads(result_file.read_text())


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(model_type: str, model_dir: str, eval_file: str, args: dict | None = None, label: str = "model",
             nproc_per_node: int = 1, parent_run_id: str | None = None, prefix: str = "") -> dict:
    """Metrics of `model_dir` on `eval_file` under the evaluation settings of `args`. With a `prefix` (e.g.
    "champion_") the parent run gets prefixed names, so two models can sit on one run."""
    with tracking.child_run(parent_run_id, f"evaluate {label}") as run_id:
        result = engine_eval(model_type, model_dir, eval_file, args, nproc_per_node)
        metrics = {k: float(result[k]) for k in METRICS if isinstance(result.get(k), (int, float))}
        if "perplexity" not in metrics:
            raise RuntimeError(f"the evaluation of {model_dir} returned no perplexity: {result}")
        tracking.log_params(run_id, {"model_dir": model_dir, "eval_file": eval_file, **eval_settings(args)})
        tracking.log_metrics(run_id, metrics)
        tracking.log_metrics(parent_run_id, {prefix + k: v for k, v in metrics.items()})
        judge_discriminator(metrics, label, (run_id, parent_run_id), prefix)
    logger().info("evaluate %s: %s", label, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if TaskRunContext.get() is not None:  # run bare (task.fn()) there is no run to attach the table to
        create_table_artifact(
            key=re.sub(r"[^a-z0-9-]+", "-", f"evaluation-{label}".lower()).strip("-"),
            table=[{"metric": k, "value": round(v, 6)} for k, v in metrics.items()],
            description=f"Evaluation of {label} ({model_dir}) on {eval_file}")
    return metrics


def judge_discriminator(metrics: dict, label: str, runs: tuple = (), prefix: str = "") -> bool | None:
    """Whether an ELECTRA discriminator learned anything (None: not an ELECTRA model): its accuracy above the
    all-original baseline and its AUC above chance. The answer is the tag `discriminator.learned` on `runs` (the
    parent's tag with `prefix`), and one that did not is named in a WARNING line of the flow log."""
    if "discriminator_accuracy" not in metrics or "discriminator_baseline_accuracy" not in metrics:
        return None
    accuracy, baseline = metrics["discriminator_accuracy"], metrics["discriminator_baseline_accuracy"]
    auc = metrics.get("discriminator_auc", float("nan"))
    learned = accuracy > baseline + BASELINE_MARGIN and auc > CHANCE_AUC  # a NaN AUC (one class only) fails too
    for i, run in enumerate(runs):
        tracking.set_tags(run, {("" if i == 0 else prefix) + "discriminator.learned": str(learned).lower()})
    if not learned:
        logger().warning(
            "evaluate %s: the discriminator has learned nothing it can show: accuracy %.4f is no better than "
            "answering 'original' for every token (%.4f), AUC %.3f (0.5 is chance), F1 %.3f on replaced tokens. "
            "Train longer, or with a higher learning rate or discriminator_loss_weight.", label, accuracy, baseline,
            auc, metrics.get("discriminator_f1", 0.0))
    return learned


def main(argv=None) -> None:
    """`python -m tasks.evaluate`: evaluate a saved model; under `mlflow run` the metrics go to its run."""
    import argparse
    import os

    p = argparse.ArgumentParser(prog="python -m tasks.evaluate", description=main.__doc__)
    p.add_argument("--model-type", default="bert")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--eval-file", required=True)
    p.add_argument("--args", default="{}", type=json.loads, help="evaluation settings (LanguageModelingArgs) as JSON")
    ns = p.parse_args(argv)
    result = engine_eval(ns.model_type, ns.model_dir, ns.eval_file, ns.args)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        tracking.log_params(run_id, {"model_type": ns.model_type, "model_dir": ns.model_dir,
                                     "eval_file": ns.eval_file})
        tracking.log_metrics(run_id, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
