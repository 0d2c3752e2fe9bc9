"""Flow `finetune`: continue training the registered champion on what is in a corpus folder now, evaluate the new
model and the champion on the same eval split, and move the alias `champion` only when perplexity improves.
An ELECTRA model (registered as <name>-generator and <name>-discriminator) is fine-tuned as its champion pair and
both aliases move together; its perplexity is the generator's.

A folder whose content has not changed since the last run of this flow for the same model is not trained on
again (the registry keeps the content hash of the corpus each name was last trained on).

    python -m flows.finetune --corpus-dir data/incoming --register-as sample-data-bert --args '{"max_steps": 200}'
    python -m flows.finetune --corpus-dir data/incoming --register-as web-bert --nnodes 2 --nproc-per-node 8

Training goes through the same stage as pretrain's (tasks.pretrain): one process, torchrun on this machine
(nproc_per_node), or one node job per machine (nnodes > 1, workers of the pool `nodes`).
"""

from __future__ import annotations

import argparse
import json

from prefect import flow
from prefect.runtime import flow_run

from flows.common import none_if_empty, use_running_server_or_temporary
from tasks import tracking
from tasks.common import cached_call, logger, pipeline_home
from tasks.corpus import (corpus_ready, describe_corpus, engine_args, fingerprint_corpus, prepare_corpus,
                          reading_args)
from tasks.downstream import champion_downstream
from tasks.downstream import downstream as downstream_task
from tasks.evaluate import evaluate
from tasks.inputs import PROMOTE_ON, check_downstream, check_parameters
from tasks.presets import PresetName, effective_args, settle
from tasks.pretrain import NODE_DEPLOYMENT
from tasks.pretrain import pretrain as pretrain_task
from tasks.registry import fetch_champion, find_champion, promote, register


@flow(name="finetune")
def finetune(corpus_dir: str, register_as: str, args: dict | None = None, preset: PresetName = "demo",
             eval_fraction: float = 0.05, nproc_per_node: int = 1, experiment: str = "finetune", force: bool = False,
             downstream: str | list | dict | None = None, downstream_seeds: int = 3,
             downstream_learning_rates: list[float] | None = None, promote_on: str = PROMOTE_ON,
             nnodes: int | str = 1, max_restarts: int = 0, rdzv_endpoint: str | None = None, rdzv_timeout: int = 600,
             node_deployment: str = NODE_DEPLOYMENT) -> dict:
    """Fine-tune `register_as`@champion on `corpus_dir`; the new version becomes champion only if its perplexity
    on the eval split is lower. force: train even when the folder has not changed since the last run.
    downstream (labelled tasks, as for pretrain): the new model is fine-tuned on them too, its figures logged and
    put on its registered version. promote_on: "perplexity", or a downstream metric (downstream.<task>.accuracy,
    .f1, .mcc): promoted only when its mean beats the champion's by more than their pooled standard deviation
    (the champion's figures reused from its version when measured alike, else measured in this run).
    nproc_per_node, nnodes, max_restarts, rdzv_endpoint, rdzv_timeout, node_deployment: where the training runs,
    as for pretrain (evaluations run on this machine with nproc_per_node processes)."""
    with tracking.flow_parent_run(experiment, {"stage": "finetune", "registered_model": register_as}) as run_id:
        incoming = fingerprint_corpus(corpus_dir)
        if incoming["empty"]:
            tracking.set_tags(run_id, {"outcome": "nothing new"})
            return {"mlflow_run_id": run_id, "trained": False, "reason": "corpus_dir is empty"}
        given = args
        nodes = {"nnodes": nnodes, "max_restarts": max_restarts, "rdzv_endpoint": rdzv_endpoint,
                 "rdzv_timeout": rdzv_timeout}
        args = check_parameters(corpus_dir, effective_args(preset, given, None, from_saved=True)[0],
                                nproc_per_node, nodes=nodes)
        tasks = check_downstream(downstream, downstream_seeds, downstream_learning_rates, promote_on)
        champion = find_champion(register_as)
        if incoming["hash"] == champion["last_corpus_hash"] and not force:
            logger().info("Nothing new in %s since the last fine-tuning of %s (content %s): not training",
                          corpus_dir, register_as, incoming["hash"][:12])
            tracking.set_tags(run_id, {"outcome": "nothing new", "corpus_hash": incoming["hash"]})
            return {"mlflow_run_id": run_id, "trained": False, "reason": "nothing new in corpus_dir"}
        local = fetch_champion(champion)
        model_type = local["model_type"]
        args = check_parameters(None, settle(preset, given, model_type, from_saved=True, run_id=run_id))
        on_nodes = {"nnodes": str(nnodes), "max_restarts": max_restarts} if str(nnodes) != "1" else {}
        tracking.log_params(run_id, {"model_type": model_type, "champion_version": champion["version"],
                                     "nproc_per_node": nproc_per_node, "eval_fraction": eval_fraction, "args": args,
                                     "corpus_hash": incoming["hash"], **on_nodes})
        prep, _ = cached_call(prepare_corpus, False, corpus_ready, corpus=corpus_dir, eval_fraction=eval_fraction,
                              reading=reading_args(args), parent_run_id=run_id)
        args = engine_args(args)  # the stages after this one read the prepared plain text
        describe_corpus(prep, local["folder"], parent_run_id=run_id)
        old = evaluate(model_type, local["folder"], prep["eval_file"], args=args,
                       label=f"champion v{champion['version']}", nproc_per_node=nproc_per_node,
                       parent_run_id=run_id, prefix="champion_")
        trained = pretrain_task(model_type=model_type, train_file=prep["train_file"], eval_file=prep["eval_file"],
                                output_dir=str(pipeline_home() / "models" / str(flow_run.id or run_id)),
                                args=args, model_name=local["folder"], nproc_per_node=nproc_per_node,
                                parent_run_id=run_id, nnodes=nnodes, max_restarts=max_restarts,
                                rdzv_endpoint=rdzv_endpoint, rdzv_timeout=rdzv_timeout,
                                node_deployment=node_deployment)
        new = evaluate(model_type, trained["output_dir"], prep["eval_file"], args=args, label="challenger",
                       nproc_per_node=nproc_per_node, parent_run_id=run_id, prefix="challenger_")
        scored = downstream_task(model_type, trained["output_dir"], tasks, downstream_seeds, downstream_learning_rates,
                                 parent_run_id=run_id, label="challenger") if tasks else {"figures": {}, "tags": {}}
        held = champion_downstream(champion, model_type, local["folder"], tasks, downstream_seeds,
                                   downstream_learning_rates, parent_run_id=run_id) if promote_on != PROMOTE_ON else None
        registered = register(model_type, trained["output_dir"], register_as, mlm=args.get("mlm", True),
                              tags={"corpus_hash": incoming["hash"], "fine_tuned_from": champion["version"]},
                              parent_run_id=run_id, first_is_champion=False, version_tags=scored["tags"])
        decision = promote(champion, registered["versions"], old["perplexity"], new["perplexity"],
                           corpus_hash=incoming["hash"], parent_run_id=run_id, promote_on=promote_on,
                           champion_downstream=held, challenger_downstream=scored["figures"])
    versions = registered["versions"]
    version = versions[champion["holder"]]
    return {"mlflow_run_id": run_id, "trained": True, "promoted": decision["promoted"],
            "champion_perplexity": old["perplexity"], "challenger_perplexity": new["perplexity"],
            "version": version, "champion_version": version if decision["promoted"] else champion["version"],
            "versions": versions, "champion_versions": decision["champion_versions"],
            "decision": decision["decision"], "downstream": scored["figures"], "champion_downstream": held}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.finetune", description=finetune.description)
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--register-as", required=True)
    p.add_argument("--args", default="{}", type=json.loads,
                   help="LanguageModelingArgs fields as JSON, merged over the preset's")
    p.add_argument("--preset", default="demo", help="named settings args go over: demo, small, base, none")
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--experiment", default="finetune")
    p.add_argument("--force", action="store_true")
    p.add_argument("--downstream", nargs="*", help="labelled files or folders (rotten_tomatoes: the demo task)")
    p.add_argument("--downstream-seeds", type=int, default=3)
    p.add_argument("--downstream-learning-rates", type=float, nargs="*")
    p.add_argument("--promote-on", default=PROMOTE_ON, help="perplexity, or downstream.<task>.<accuracy|f1|mcc>")
    p.add_argument("--nnodes", default="1", help="machines to train on: a count, or an elastic MIN:MAX")
    p.add_argument("--max-restarts", type=int, default=0)
    p.add_argument("--rdzv-endpoint", type=none_if_empty, help="HOST:PORT (default: the first node publishes its own)")
    p.add_argument("--rdzv-timeout", type=int, default=600)
    p.add_argument("--node-deployment", type=none_if_empty, help=f"default: {NODE_DEPLOYMENT}")
    ns = p.parse_args(argv)
    with use_running_server_or_temporary():
        out = finetune(corpus_dir=ns.corpus_dir, register_as=ns.register_as, args=ns.args, preset=ns.preset,
                       eval_fraction=ns.eval_fraction, nproc_per_node=ns.nproc_per_node, experiment=ns.experiment,
                       force=ns.force, downstream=ns.downstream or None, downstream_seeds=ns.downstream_seeds,
                       downstream_learning_rates=ns.downstream_learning_rates or None, promote_on=ns.promote_on,
                       nnodes=int(ns.nnodes) if ns.nnodes.isdigit() else ns.nnodes, max_restarts=ns.max_restarts,
                       rdzv_endpoint=ns.rdzv_endpoint, rdzv_timeout=ns.rdzv_timeout,
                       node_deployment=ns.node_deployment or NODE_DEPLOYMENT)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
