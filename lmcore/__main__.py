"""`python -m lmcore`: the engine's command line, the same on one process and under torchrun.

    python -m lmcore demo                                   # a small BERT from scratch on the sample corpus
    python -m lmcore train --model-type bert --train corpus.txt --eval eval.txt --output-dir out \\
        --set num_train_epochs=2 --set vocab_size=8000
    python -m lmcore train --spec run.json                  # everything in one JSON file (what the pipeline uses)
    python -m lmcore eval --model-type bert --model-name out --eval eval.txt
    torchrun --nproc_per_node=2 -m lmcore train ...         # the same, data-parallel

A spec file is a `lmcore.spec.RunSpec` as JSON (model_type, model_name, train_files, eval_files, output_dir,
args, generator_name, discriminator_name, result_file, file_hashes); `--set key=value` (value parsed as JSON when
it parses) overrides args. The eval result is printed as one JSON line and, with result_file, written there by
rank 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .base.atomic import write_text
from .spec import RunSpec

DEMO = {
    "model_type": "bert",
    "model_name": None,
    "train_files": ["sample"],  # the sample corpus (lmcore.data.sample_corpus), written on first use
    "eval_files": ["sample[eval]"],
    "output_dir": "outputs/demo-bert",
    "args": {"vocab_size": 8000, "max_seq_length": 128, "num_train_epochs": 3, "train_batch_size": 32,
             "learning_rate": 1e-3, "warmup_ratio": 0.1, "overwrite_output_dir": True, "save_steps": -1,
             "save_model_every_epoch": False, "logging_steps": 10, "cache_dir": "cache_dir/",
             "config": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 512}},
}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


OBJECTIVES = {
    "bert": "masked LM", "camembert": "masked LM", "distilbert": "masked LM", "electra": "ELECTRA (generator + "
    "discriminator)", "gpt2": "causal LM (mlm=false)", "longformer": "masked LM", "openai-gpt": "causal LM "
    "(mlm=false)", "roberta": "masked LM",
}
"""What --help lists, written out so the help needs no torch or transformers import (a test holds it equal to
lmcore.models.registry.MODEL_TYPES)."""


def _help_epilog() -> str:
    types = "\n".join(f"  {name:<11} {what}" for name, what in OBJECTIVES.items())
    return (f"model types and their objectives:\n{types}\n\n"
            "examples:\n" + __doc__.split("\n\n")[1].rstrip() + "\n\n"
            "settings: any LanguageModelingArgs field with --set FIELD=VALUE (lmcore/models/args.py documents each);\n"
            "progress goes to stderr, quiet with --set silent=true.\n"
            "pipeline (Prefect + MLflow): python -m flows.pretrain --help; deployments and their parameters are in\n"
            "prefect.yaml and the README's Pipeline section.")


def parse(argv: list[str]) -> tuple[str, RunSpec]:
    p = argparse.ArgumentParser(prog="python -m lmcore", description=__doc__.split("\n\n")[0],
                                epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train a small BERT from scratch on the sample corpus and print its perplexity")
    for name, what in (("train", "train a model (from scratch, or from --model-name) and save it"),
                       ("eval", "evaluate a saved model: eval_loss and perplexity as one JSON line")):
        s = sub.add_parser(name, help=what, description=what)
        s.add_argument("--spec", help="JSON run spec (flags below override it)")
        s.add_argument("--model-type", choices=list(OBJECTIVES), metavar="TYPE",
                       help=f"one of {', '.join(OBJECTIVES)}")
        s.add_argument("--model-name")
        s.add_argument("--generator-name")
        s.add_argument("--discriminator-name")
        s.add_argument("--train", nargs="+", dest="train_files")
        s.add_argument("--eval", nargs="+", dest="eval_files")
        s.add_argument("--output-dir")
        s.add_argument("--result-file")
        s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="a LanguageModelingArgs field (repeatable)")
    ns = p.parse_args(argv)
    if ns.command == "demo":
        return "train", RunSpec.from_dict(json.loads(json.dumps(DEMO)))
    values = RunSpec.load(ns.spec).to_dict() if ns.spec else {}
    for key in ("model_type", "model_name", "generator_name", "discriminator_name", "train_files", "eval_files",
                "output_dir", "result_file"):
        if getattr(ns, key) is not None:
            values[key] = getattr(ns, key)
    values.setdefault("args", {})
    for item in ns.set:
        if "=" not in item:
            p.error(f"--set {item!r}: expected FIELD=VALUE")
        key, value = item.split("=", 1)
        values["args"][key] = _value(value)
    if not values.get("model_type"):
        p.error("--model-type (or model_type in --spec) is required")
    if ns.command == "train" and not values.get("train_files"):
        p.error("--train (or train_files in --spec) is required")
    if ns.command == "eval" and not values.get("eval_files"):
        p.error("--eval (or eval_files in --spec) is required")
    return ns.command, RunSpec.from_dict(values)


def run(command: str, spec: RunSpec) -> dict:
    from lmcore import LanguageModelingModel
    from lmcore.training import dist
    from lmcore.data.corpus import remember_file_hashes
    from lmcore.training.tracking import tracker_from_environment

    remember_file_hashes(spec.file_hashes)
    tracker = tracker_from_environment()  # rank 0 under MLFLOW_RUN_ID (set by the pipeline), else None
    try:
        return _run(command, spec, LanguageModelingModel, dist, tracker)
    finally:
        if tracker is not None:
            tracker.close()


def _run(command: str, spec: RunSpec, LanguageModelingModel, dist, tracker) -> dict:
    args = dict(spec.args)
    if spec.output_dir:
        args["output_dir"] = spec.output_dir
    try:
        model = LanguageModelingModel(spec.model_type, spec.model_name, args=args,
                                      train_files=spec.train_files or None, generator_name=spec.generator_name,
                                      discriminator_name=spec.discriminator_name, tracker=tracker)
    except ValueError as e:  # transformers checks a config only when it builds the model (hidden_size 65, 2 heads):
        from lmcore import ArgsError, CorpusError  # bad settings like any other, exit code 2, never retried

        if isinstance(e, (ArgsError, CorpusError)):
            raise
        raise ArgsError(f"model settings: {e}") from e
    result: dict = {}
    if command == "train":
        step, _ = model.train_model(spec.train_files, eval_file=spec.eval_files or None,
                                    on_evaluation=_evaluation_hook(spec.on_evaluation, dist.is_main()))
        result["global_step"] = step
        result["tokens_seen"] = model.training_details["tokens_seen"]
        result["compiled"] = model.training_details["compiled"]
        if model.training_details["compile_warmup_s"] is not None:
            result["compile_warmup_s"] = model.training_details["compile_warmup_s"]
        if model.training_details.get("stopped_by"):
            result["stopped_by"] = model.training_details["stopped_by"]
    if spec.eval_files and (command == "eval" or spec.final_eval):
        result.update(model.eval_model(spec.eval_files))
    if dist.is_main():
        print(json.dumps(result), flush=True)
        if spec.result_file:
            write_text(spec.result_file, json.dumps(result, indent=2))
    return result


def _evaluation_hook(hook: dict | None, main: bool):
    """The callable a run spec's `on_evaluation` names ("package.module:factory" and its kwargs), or None. Only
    the main process calls it; the others get a stand-in, so that every process takes part in sharing its answer."""
    if not hook:
        return None
    if not main:
        return lambda step, result: None
    import importlib

    from lmcore import ArgsError

    target = str(hook.get("hook", ""))
    module, _, name = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ArgsError(f"run spec on_evaluation: cannot import {target!r} ({e})") from None
    return factory(**(hook.get("kwargs") or {}))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,  # LMCORE_LOG_FORMAT: the pipeline's log adds its own timestamp
                        format=os.environ.get("LMCORE_LOG_FORMAT", "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("transformers").setLevel(logging.WARNING)
    command, spec = parse(sys.argv[1:] if argv is None else argv)
    from lmcore import ArgsError, CorpusError, ModelNotFoundError, NonFiniteLossError

    try:
        result = run(command, spec)
    except (ArgsError, CorpusError, ModelNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if "perplexity" in result and int(os.environ.get("RANK", "0")) == 0:  # every rank holds it; one says it
        logging.getLogger("lmcore").info("Perplexity: %.2f (eval loss %.4f)", result["perplexity"],
                                         result["eval_loss"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
