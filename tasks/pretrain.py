"""pretrain: train with the engine (tasks/launch.py runs it here, under torchrun for more than one process; with
nnodes > 1 tasks/nodes.py submits one node job per machine and follows them, with the same exit-code semantics and
the same resume from the newest complete checkpoint on a retry).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.data.corpus import known_file_hashes
from lmcore.spec import RunSpec

from . import tracking
from .common import logger
from .inputs import parse_nnodes
# The launcher's names stay importable from here, where callers have long found them.
from .launch import (BAD_INPUT, ENGINE_LOG_FORMAT, NODE_DEPLOYMENT, BadRunInput, EngineFailed,  # noqa: F401
                     NodesNotStarted, engine_command, engine_env, launch_command, loggable, relog, retry_transient,
                     run_engine)
from .nodes import train_on_nodes


@task(name="pretrain", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def pretrain(model_type: str, train_file: str, eval_file: str, output_dir: str, args: dict | None = None,
             model_name: str | None = None, tokenizer_dir: str | None = None, generator_name: str | None = None,
             discriminator_name: str | None = None, nproc_per_node: int = 1,
             parent_run_id: str | None = None, nnodes: int | str = 1, max_restarts: int = 0,
             rdzv_endpoint: str | None = None, rdzv_timeout: int = 600,
             node_deployment: str = NODE_DEPLOYMENT, on_evaluation: dict | None = None) -> dict:
    """Train with the engine; returns {"output_dir", "result" (global_step, tokens_seen), "run_id"}.

    The model is not evaluated here: the evaluate stage scores every model one way (so a fine-tuned model and the
    champion it is compared with get figures computed alike, and each model has one perplexity). `eval_file` is
    handed to the engine only for evaluate_during_training.

    nnodes > 1 (or an elastic "MIN:MAX"): one node job per machine through `node_deployment`, each running
    nproc_per_node processes under torchrun, meeting at `rdzv_endpoint` (None: the first node publishes its
    address) within `rdzv_timeout` seconds; `max_restarts`: torchrun's restarts of a node's processes.
    on_evaluation: the run spec's hook for evaluations during training (a sweep's pruning, tasks/pruning.py); a run
    it stopped ends normally, with "stopped_by" in its result."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = dict(args or {})
    # The best model (evaluations during training) goes into the run's own folder, never a shared relative one.
    engine_args = {"overwrite_output_dir": True, "resume_from_checkpoint": "latest",
                   "cache_dir": str(out.parent / "engine-cache"), **args, "best_model_dir": str(out / "best_model")}
    if tokenizer_dir and not model_name:
        engine_args["tokenizer_name"] = tokenizer_dir
    result_file = out / "result.json"
    result_file.unlink(missing_ok=True)
    eval_files = [eval_file] if args.get("evaluate_during_training") else []
    spec = RunSpec(model_type=model_type, model_name=model_name, train_files=[train_file], eval_files=eval_files,
                   output_dir=str(out), args=engine_args, generator_name=generator_name,
                   discriminator_name=discriminator_name, result_file=str(result_file), final_eval=False,
                   file_hashes=known_file_hashes([Path(f) for f in [train_file, *eval_files]]),
                   on_evaluation=on_evaluation)
    spec_file = out / "spec.json"
    spec.save(spec_file)
    on_nodes = parse_nnodes(nnodes) != (1, 1)
    layout = {"nproc_per_node": nproc_per_node, **({"nnodes": str(nnodes), "max_restarts": max_restarts}
                                                   if on_nodes or max_restarts else {})}
    with tracking.child_run(parent_run_id, "pretrain", layout) as run_id:
        tracking.log_params(run_id, {"model_type": model_type, "model_name": model_name, **layout, "args": args})
        if on_nodes:
            train_on_nodes(spec_file, nnodes, nproc_per_node, max_restarts, rdzv_endpoint, rdzv_timeout, run_id,
                           f"training {model_type}", node_deployment)
        else:
            command = engine_command(spec_file, nproc_per_node, max_restarts=max_restarts)
            logger().info("pretrain: %s", " ".join(command))
            run_engine(command, engine_env(nproc_per_node, run_id), f"training {model_type}")
        result = json.loads(result_file.read_text())
        tracking.log_metrics(run_id, {k: v for k, v in result.items() if k in ("global_step", "tokens_seen")},
                             step=int(result.get("global_step", 0)))
        tracking.log_training_curves(run_id, also_on=(parent_run_id,))
    return {"output_dir": str(out), "result": result, "run_id": run_id}
