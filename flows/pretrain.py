"""Flow `pretrain`: corpus -> prepared splits -> tokenizer (from scratch) -> engine under torchrun -> evaluation ->
logged and registered model(s), all in one MLflow parent run with a child run per stage.

    python -m flows.pretrain --corpus lmcore/sample_data/train.txt --model-type bert --args '{"max_steps": 50}'
"""

from __future__ import annotations

import argparse
import json

from prefect import flow
from prefect.runtime import deployment, flow_run

from flows.common import ModelType, check_parameters, parent_run, use_running_server_or_temporary
from lmcore import ArgsError
from tasks import tracking
from tasks.common import cached_call, logger, pipeline_home
from tasks.corpus import corpus_ready, prepare_corpus
from tasks.electra import split_electra
from tasks.evaluate import evaluate
from tasks.models import register_model
from tasks.pretrain import pretrain as pretrain_task
from tasks.tokenizer import tokenizer_ready, train_tokenizer


@flow(name="pretrain")
def pretrain(corpus: str | list[str], model_type: ModelType = "bert", model_name: str | None = None,
             args: dict | None = None, eval_corpus: str | list[str] | None = None, eval_fraction: float = 0.05,
             nproc_per_node: int = 1, experiment: str = "pretrain", register_as: str | None = None,
             generator_name: str | None = None, discriminator_name: str | None = None,
             refresh: bool = False) -> dict:
    """Train a language model from scratch (model_name=None) or from a saved one, on `corpus`, and evaluate it.

    args: LanguageModelingArgs fields. register_as: registered model name (ELECTRA registers
    <register_as>-generator and <register_as>-discriminator). refresh: redo corpus preparation and tokenizer
    training even when cached."""
    args, register_as = dict(args or {}), register_as or None
    from_scratch = not (model_name or generator_name or discriminator_name)
    with parent_run(experiment, {"model_type": model_type, "stage": "pretrain"}) as run_id:
        args = check_parameters(corpus, args, nproc_per_node, eval_corpus, model_name)
        if deployment.name == "fine-tune" and from_scratch:
            raise ArgsError("model_name: the fine-tune deployment continues from a saved model; pass "
                            "--param model_name='\"<folder>\"' (or use pretrain/from-scratch)")
        tracking.log_params(run_id, {"model_type": model_type, "model_name": model_name, "nproc_per_node":
                                     nproc_per_node, "eval_fraction": eval_fraction, "register_as": register_as,
                                     "args": args})
        prep, prep_cached = cached_call(prepare_corpus, refresh, corpus_ready, corpus=corpus, eval_corpus=eval_corpus,
                                        eval_fraction=eval_fraction, strict_utf8=bool(args.get("strict_utf8")),
                                        parent_run_id=run_id)
        _log_corpus(run_id, prep)
        tokenizer_dir, tok_cached = None, None
        if from_scratch:
            tokenizer_dir, tok_cached = cached_call(train_tokenizer, refresh, tokenizer_ready, train_file=prep["train_file"],
                                                    corpus_key=prep["key"], model_type=model_type, args=args,
                                                    parent_run_id=run_id)
            tracking.client().log_artifacts(run_id, tokenizer_dir, "tokenizer")
        tracking.set_tags(run_id, {"cache.prepare_corpus": prep_cached, "cache.train_tokenizer": tok_cached})
        logger().info("prepare_corpus %s, train_tokenizer %s", "cached" if prep_cached else "computed",
                      {None: "not needed", True: "cached", False: "computed"}[tok_cached])
        trained = pretrain_task(model_type=model_type, train_file=prep["train_file"], eval_file=prep["eval_file"],
                                output_dir=str(pipeline_home() / "models" / str(flow_run.id or run_id)),
                                args=args, model_name=model_name, tokenizer_dir=tokenizer_dir,
                                generator_name=generator_name, discriminator_name=discriminator_name,
                                nproc_per_node=nproc_per_node, parent_run_id=run_id)
        metrics = evaluate(model_type, trained["output_dir"], prep["eval_file"], result=trained["result"],
                           label=f"{model_type} {flow_run.name or ''}".strip(), parent_run_id=run_id)
        tags = {"corpus_key": prep["key"], "prefect_flow_run_id": flow_run.id}
        if model_type == "electra":
            registered = split_electra(trained["output_dir"], register_as, parent_run_id=run_id, tags=tags)
        else:
            registered = register_model(model_type, trained["output_dir"], register_as,
                                        mlm=args.get("mlm", True), tags=tags, parent_run_id=run_id)
    return {"mlflow_run_id": run_id, "metrics": metrics, "output_dir": trained["output_dir"], "corpus": prep,
            "tokenizer_dir": tokenizer_dir, "cached": {"prepare_corpus": prep_cached, "train_tokenizer": tok_cached},
            "registered": registered}


def _log_corpus(run_id: str, prep: dict) -> None:
    tracking.log_params(run_id, {f"corpus.{k}": v for k, v in prep.items()
                                 if k not in ("sources", "eval_sources", "dir", "train_file", "eval_file")})
    tracking.log_params(run_id, {"corpus.sources": ",".join(prep["sources"])[:6000]})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.pretrain", description=pretrain.description)
    p.add_argument("--corpus", required=True, nargs="+")
    p.add_argument("--model-type", default="bert")
    p.add_argument("--model-name")
    p.add_argument("--args", default="{}", type=json.loads, help="LanguageModelingArgs fields as JSON")
    p.add_argument("--eval-corpus", nargs="+")
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--experiment", default="pretrain")
    p.add_argument("--register-as")
    p.add_argument("--refresh", action="store_true")
    ns = p.parse_args(argv)
    with use_running_server_or_temporary():
        out = pretrain(corpus=ns.corpus, model_type=ns.model_type, model_name=ns.model_name, args=ns.args,
                       eval_corpus=ns.eval_corpus, eval_fraction=ns.eval_fraction,
                       nproc_per_node=ns.nproc_per_node, experiment=ns.experiment, register_as=ns.register_as,
                       refresh=ns.refresh)
    print(json.dumps(out["metrics"]))


if __name__ == "__main__":
    main()
