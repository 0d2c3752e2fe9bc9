"""Flow `pretrain`: corpus -> prepared splits -> tokenizer (from scratch) -> engine under torchrun (on one machine,
or with nnodes > 1 on several: one node job per machine) -> evaluation -> registered model(s), all in one MLflow
parent run with a child run per stage.

    python -m flows.pretrain --corpus data/mine.txt --model-type bert --args '{"max_steps": 50}'
    python -m flows.pretrain --corpus data/mine.txt --nnodes 2 --nproc-per-node 8     # workers on pool `nodes`
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.common import deployments_help, none_if_empty


def cli() -> argparse.ArgumentParser:
    """The command line's options (built before the flow's imports, so --help answers at once)."""
    p = argparse.ArgumentParser(prog="python -m flows.pretrain", description=__doc__.split("\n\n")[0],
                                epilog=deployments_help("pretrain"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, nargs="+")
    p.add_argument("--model-type", default="bert")
    p.add_argument("--model-name", type=none_if_empty)
    p.add_argument("--args", default="{}", type=json.loads,
                   help="LanguageModelingArgs fields as JSON, merged over the preset's")
    p.add_argument("--preset", default="demo", help="named settings args go over: demo, small, base, none")
    p.add_argument("--eval-corpus", nargs="*", help="default: a split of the corpus")
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--experiment", default="pretrain")
    p.add_argument("--register-as", type=none_if_empty, help="default: <corpus name>-<model type>")
    p.add_argument("--refresh", action="store_true")
    p.add_argument("--nnodes", default="1", help="machines to train on: a count, or an elastic MIN:MAX")
    p.add_argument("--max-restarts", type=int, default=0)
    p.add_argument("--rdzv-endpoint", type=none_if_empty, help="HOST:PORT (default: the first node publishes its own)")
    p.add_argument("--rdzv-timeout", type=int, default=600)
    p.add_argument("--node-deployment", help="default: node/torchrun")
    p.add_argument("--downstream", nargs="*", help="labelled files or folders (rotten_tomatoes: the demo task)")
    p.add_argument("--downstream-seeds", type=int, default=3)
    p.add_argument("--downstream-learning-rates", type=float, nargs="*")
    return p


if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    cli().parse_args()  # prints the help and exits before the imports below (torch, transformers: seconds)

from prefect import flow  # noqa: E402 (after the --help fast path)
from prefect.runtime import flow_run

from flows.common import use_running_server_or_temporary
from tasks import tracking
from tasks.common import cached_call, logger, pipeline_home
from tasks.corpus import (corpus_ready, describe_corpus, engine_args, prepare_corpus, reading_args,
                          tokenizer_key)
from tasks.downstream import downstream as downstream_task
from tasks.evaluate import evaluate
from tasks.inputs import ModelType, check_downstream, check_parameters, default_model_name
from tasks.presets import PresetName, settle
from tasks.pretrain import NODE_DEPLOYMENT
from tasks.pretrain import pretrain as pretrain_task
from tasks.registry import register
from tasks.tokenizer import tokenizer_ready, train_tokenizer


@flow(name="pretrain")
def pretrain(corpus: str | list[str], model_type: ModelType = "bert", model_name: str | None = None,
             args: dict | None = None, preset: PresetName = "demo", eval_corpus: str | list[str] | None = None,
             eval_fraction: float = 0.05, nproc_per_node: int = 1, experiment: str = "pretrain",
             register_as: str | None = None, generator_name: str | None = None, discriminator_name: str | None = None,
             refresh: bool = False, from_scratch: bool | None = None, nnodes: int | str = 1,
             max_restarts: int = 0, rdzv_endpoint: str | None = None, rdzv_timeout: int = 600,
             node_deployment: str = NODE_DEPLOYMENT, downstream: str | list | dict | None = None,
             downstream_seeds: int = 3, downstream_learning_rates: list[float] | None = None,
             register_model: bool = True, mlflow_run_id: str | None = None, output_dir: str | None = None,
             on_evaluation: dict | None = None) -> dict:
    """Train a language model from scratch (model_name=None) or from a saved one, on `corpus`, and evaluate it.

    args: LanguageModelingArgs fields, merged key by key (config dicts too) over the named settings of `preset`
    (tasks/presets.py: demo, small, base; none: the engine's defaults). eval_corpus: what perplexity is measured
    on (default: a hash-chosen eval_fraction of `corpus`, never trained on). register_as: registered model name (default
    <corpus name>-<model type>; ELECTRA registers <register_as>-generator and <register_as>-discriminator).
    refresh: redo corpus preparation and tokenizer training even when cached. from_scratch: true refuses a saved
    model to start from, false requires one (model_name, or generator_name and discriminator_name).
    nnodes: machines to train on (a count, or an elastic "MIN:MAX"), each running nproc_per_node processes: one
    job per node through node_deployment, whose workers sit on those machines; PIPELINE_HOME must be shared.
    max_restarts: torchrun's restarts of a node's processes after a crash. rdzv_endpoint: HOST:PORT of the
    rendezvous (None: the first node publishes its own); rdzv_timeout: seconds to wait for every node.
    downstream: labelled files or folders (a path, a list, or mappings {"path", "label_column", "test", ...};
    "rotten_tomatoes" is the bundled demo task) the trained model (ELECTRA: its discriminator) is fine-tuned on,
    downstream_seeds times at each of downstream_learning_rates, beside random initialisation (tasks/downstream.py).
    A sweep's trial (flows/sweep.py) passes the rest: register_model=False (only the sweep registers), the MLflow run
    to log into (mlflow_run_id, nested under the sweep's), its own output_dir (a rerun continues from its last
    checkpoint), and on_evaluation, the hook that reports each evaluation and may stop the trial (then it is neither
    evaluated again nor fine-tuned downstream)."""
    starts_from = tuple(k for k, v in (("model_name", model_name), ("generator_name", generator_name),
                                       ("discriminator_name", discriminator_name)) if v)
    with tracking.flow_parent_run(experiment, {"model_type": model_type, "stage": "pretrain"},
                                  run_id=mlflow_run_id) as run_id:
        nodes = {"nnodes": nnodes, "max_restarts": max_restarts, "rdzv_endpoint": rdzv_endpoint,
                 "rdzv_timeout": rdzv_timeout}
        args = settle(preset, args, model_type, from_saved=bool(starts_from), run_id=run_id)
        args = check_parameters(corpus, args, nproc_per_node, eval_corpus, model_name, from_scratch,
                                starts_from, nodes=nodes, model_type=model_type)
        tasks = check_downstream(downstream, downstream_seeds, downstream_learning_rates)
        register_as = register_as or default_model_name(corpus, model_type)
        tracking.log_params(run_id, {"model_type": model_type, "model_name": model_name, "nproc_per_node":
                                     nproc_per_node, "eval_fraction": eval_fraction, "register_as": register_as,
                                     "args": args, **({"nnodes": str(nnodes), "max_restarts": max_restarts}
                                                      if str(nnodes) != "1" else {})})
        prep, prep_cached = cached_call(prepare_corpus, refresh, corpus_ready, corpus=corpus, eval_corpus=eval_corpus,
                                        eval_fraction=eval_fraction, reading=reading_args(args),
                                        parent_run_id=run_id)
        args = engine_args(args)  # the stages after this one read the prepared plain text
        tracking.log_params(run_id, {f"corpus.{k}": v for k, v in prep.items()
                                     if k not in ("sources", "eval_sources", "dir", "train_file", "eval_file",
                                                  "per_source", "reading")})
        tokenizer_dir, tok_cached = None, None
        if not starts_from:
            tokenizer_dir, tok_cached = cached_call(train_tokenizer, refresh, tokenizer_ready,
                                                    train_file=prep["train_file"], corpus_key=tokenizer_key(prep),
                                                    model_type=model_type, args=args, parent_run_id=run_id)
        describe_corpus(prep, tokenizer_dir or model_name or discriminator_name, parent_run_id=run_id)
        tracking.set_tags(run_id, {"cache.prepare_corpus": prep_cached, "cache.train_tokenizer": tok_cached,
                                   "tokenizer_dir": tokenizer_dir})
        logger().info("prepare_corpus %s (eval split: %s), train_tokenizer %s",
                      "cached" if prep_cached else "computed", prep["eval_split"],
                      {None: "not needed", True: "cached", False: "computed"}[tok_cached])
        trained = pretrain_task(model_type=model_type, train_file=prep["train_file"], eval_file=prep["eval_file"],
                                output_dir=output_dir or str(pipeline_home() / "models" / str(flow_run.id or run_id)),
                                args=args, model_name=model_name, tokenizer_dir=tokenizer_dir,
                                generator_name=generator_name, discriminator_name=discriminator_name,
                                nproc_per_node=nproc_per_node, parent_run_id=run_id, nnodes=nnodes,
                                max_restarts=max_restarts, rdzv_endpoint=rdzv_endpoint, rdzv_timeout=rdzv_timeout,
                                node_deployment=node_deployment, on_evaluation=on_evaluation)
        stopped_by = trained["result"].get("stopped_by")
        if stopped_by:
            logger().info("training stopped at step %s: %s", trained["result"].get("global_step"), stopped_by)
            tracking.set_tags(run_id, {"training.stopped_by": stopped_by})  # the reason, beside the run's figures
            return {"mlflow_run_id": run_id, "metrics": {}, "downstream": {}, "output_dir": trained["output_dir"],
                    "corpus": prep, "tokenizer_dir": tokenizer_dir, "stopped_by": stopped_by, "registered": None,
                    "cached": {"prepare_corpus": prep_cached, "train_tokenizer": tok_cached}}
        metrics = evaluate(model_type, trained["output_dir"], prep["eval_file"], args=args,
                           label=f"{model_type} {flow_run.name or ''}".strip(), nproc_per_node=nproc_per_node,
                           parent_run_id=run_id)
        scored = downstream_task(model_type, trained["output_dir"], tasks, downstream_seeds, downstream_learning_rates,
                                 parent_run_id=run_id) if tasks else {"figures": {}, "tags": {}}
        registered = None if not register_model else register(model_type, trained["output_dir"], register_as, mlm=args.get("mlm", True),
                              tags={"corpus_key": prep["key"], "prefect_flow_run_id": flow_run.id},
                              parent_run_id=run_id, version_tags=scored["tags"])
    return {"mlflow_run_id": run_id, "metrics": metrics, "downstream": scored["figures"],
            "output_dir": trained["output_dir"], "corpus": prep,
            "tokenizer_dir": tokenizer_dir, "cached": {"prepare_corpus": prep_cached, "train_tokenizer": tok_cached},
            "registered": registered}


def main(argv=None) -> None:
    ns = cli().parse_args(argv)
    eval_corpus = [c for c in ns.eval_corpus or [] if c] or None
    with use_running_server_or_temporary():
        out = pretrain(corpus=ns.corpus, model_type=ns.model_type, model_name=ns.model_name, args=ns.args,
                       preset=ns.preset, eval_corpus=eval_corpus, eval_fraction=ns.eval_fraction,
                       nproc_per_node=ns.nproc_per_node, experiment=ns.experiment, register_as=ns.register_as,
                       refresh=ns.refresh, nnodes=int(ns.nnodes) if ns.nnodes.isdigit() else ns.nnodes,
                       max_restarts=ns.max_restarts, rdzv_endpoint=ns.rdzv_endpoint,
                       rdzv_timeout=ns.rdzv_timeout, node_deployment=ns.node_deployment or NODE_DEPLOYMENT,
                       downstream=ns.downstream or None, downstream_seeds=ns.downstream_seeds,
                       downstream_learning_rates=ns.downstream_learning_rates or None)
    print(json.dumps(out["metrics"]))


if __name__ == "__main__":
    main()
