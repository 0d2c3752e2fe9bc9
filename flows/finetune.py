"""Flow `finetune`: continue training the registered champion on what is in a corpus folder now, evaluate the new
model and the champion on the same eval split, and move the alias `champion` only when perplexity improves.
An ELECTRA model (registered as <name>-generator and <name>-discriminator) is fine-tuned as its champion pair and
both aliases move together; its perplexity is the generator's.

A folder whose content has not changed since the last run of this flow for the same model is not trained on
again (the content hash is kept as a tag on the registered model).

    python -m flows.finetune --corpus-dir data/incoming --register-as lm-bert --args '{"max_steps": 200}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.common import check_parameters, parent_run, use_running_server_or_temporary
from lmcore.corpus import content_hash, resolve_files
from tasks import tracking
from tasks.common import cached_call, logger, pipeline_home
from tasks.corpus import corpus_ready, prepare_corpus
from tasks.electra import split_electra
from tasks.evaluate import evaluate
from tasks.models import (
    CHALLENGER,
    CHAMPION,
    CORPUS_TAG,
    champion_folder,
    champion_pair_folder,
    electra_names,
    register_model,
)
from tasks.pretrain import pretrain as pretrain_task


@flow(name="finetune")
def finetune(corpus_dir: str, register_as: str, args: dict | None = None, eval_fraction: float = 0.05,
             nproc_per_node: int = 1, experiment: str = "finetune", force: bool = False) -> dict:
    """Fine-tune `register_as`@champion on `corpus_dir`; the new version becomes champion only if its perplexity
    on the eval split is lower. force: train even when the folder has not changed since the last run."""
    with parent_run(experiment, {"stage": "finetune", "registered_model": register_as}) as run_id:
        if Path(corpus_dir).is_dir() and not any(not f.name.startswith(".") for f in Path(corpus_dir).rglob("*")
                                                 if f.is_file()):
            logger().info("%s is empty: nothing to fine-tune on", corpus_dir)
            tracking.set_tags(run_id, {"outcome": "nothing new"})
            return {"mlflow_run_id": run_id, "trained": False, "reason": "corpus_dir is empty"}
        args = check_parameters(corpus_dir, dict(args or {}), nproc_per_node)
        electra = not _registered(register_as) and all(_registered(n) for n in electra_names(register_as))
        # Where the last corpus fingerprint is kept: the registered model, or for ELECTRA its discriminator.
        holder = electra_names(register_as)[1] if electra else register_as
        fingerprint = content_hash(resolve_files(corpus_dir))
        last = tracking.client().get_registered_model(holder).tags.get(CORPUS_TAG) if _registered(holder) else None
        if fingerprint == last and not force:
            logger().info("Nothing new in %s since the last fine-tuning of %s (content %s): not training",
                          corpus_dir, register_as, fingerprint[:12])
            tracking.set_tags(run_id, {"outcome": "nothing new", "corpus_hash": fingerprint})
            return {"mlflow_run_id": run_id, "trained": False, "reason": "nothing new in corpus_dir"}
        if electra:
            champion_dir, old_versions = champion_pair_folder(register_as)
            model_type, old_version = "electra", old_versions[holder]
        else:
            champion_dir, model_type, old_version = champion_folder(register_as)
            old_versions = {register_as: old_version}
        tracking.log_params(run_id, {"model_type": model_type, "champion_version": old_version,
                                     "nproc_per_node": nproc_per_node, "eval_fraction": eval_fraction, "args": args,
                                     "corpus_hash": fingerprint})
        prep, _ = cached_call(prepare_corpus, False, corpus_ready, corpus=corpus_dir, eval_fraction=eval_fraction,
                              strict_utf8=bool(args.get("strict_utf8")), parent_run_id=run_id)
        old = evaluate(model_type, champion_dir, prep["eval_file"], label=f"champion v{old_version}",
                       parent_run_id=run_id, prefix="champion_")
        trained = pretrain_task(model_type=model_type, train_file=prep["train_file"], eval_file=prep["eval_file"],
                                output_dir=str(pipeline_home() / "models" / str(flow_run.id or run_id)),
                                args=args, model_name=champion_dir, nproc_per_node=nproc_per_node,
                                parent_run_id=run_id)
        # Evaluated the same way as the champion (a fresh engine process), not with the figures from the end of
        # training: the two paths can differ in the last digits, and the decision compares the two numbers.
        new = evaluate(model_type, trained["output_dir"], prep["eval_file"], label="challenger",
                       parent_run_id=run_id, prefix="challenger_")
        tracking.log_metrics(run_id, {"perplexity": new["perplexity"]})
        tags = {"corpus_hash": fingerprint, "fine_tuned_from": old_version}
        if electra:
            registered = split_electra(trained["output_dir"], register_as, parent_run_id=run_id, tags=tags)
            new_versions = {registered[part]["name"]: registered[part]["version"]
                            for part in ("generator", "discriminator")}
        else:
            registered = register_model(model_type, trained["output_dir"], register_as, mlm=args.get("mlm", True),
                                        tags=tags, parent_run_id=run_id, first_is_champion=False)
            new_versions = {register_as: registered["version"]}
        promoted = decide(new_versions, old_versions, old["perplexity"], new["perplexity"], run_id)
        tracking.client().set_registered_model_tag(holder, CORPUS_TAG, fingerprint)
    version = new_versions[holder]
    return {"mlflow_run_id": run_id, "trained": True, "promoted": promoted, "champion_perplexity": old["perplexity"],
            "challenger_perplexity": new["perplexity"], "version": version,
            "champion_version": version if promoted else old_version, "versions": new_versions,
            "champion_versions": new_versions if promoted else old_versions}


def decide(new_versions: dict[str, str], old_versions: dict[str, str], old_ppl: float, new_ppl: float,
           run_id: str) -> bool:
    """Champion moves to the new versions only on a strictly lower perplexity (an ELECTRA pair moves together:
    generator and discriminator); the decision and both figures go into the run log and onto the MLflow run."""
    c = tracking.client()
    for name, version in new_versions.items():
        c.set_registered_model_alias(name, CHALLENGER, version)
    promoted = new_ppl < old_ppl
    if promoted:
        for name, version in new_versions.items():
            c.set_registered_model_alias(name, CHAMPION, version)
    new, old = _versions(new_versions), _versions(old_versions)
    decision = (f"{new} perplexity {new_ppl:.4f} vs champion {old} {old_ppl:.4f}: "
                + (f"promoted to {CHAMPION}" if promoted else f"not better, {CHAMPION} stays {old}"))
    logger().info("%s", decision)
    tracking.set_tags(run_id, {"decision": "promoted" if promoted else "kept champion", "decision_detail": decision,
                               "outcome": "trained"})
    return promoted


def _versions(versions: dict[str, str]) -> str:
    return " + ".join(f"{name} v{version}" for name, version in versions.items())


def _registered(name: str) -> bool:
    try:
        tracking.client().get_registered_model(name)
        return True
    except Exception:
        return False


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.finetune", description=finetune.description)
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--register-as", required=True)
    p.add_argument("--args", default="{}", type=json.loads, help="LanguageModelingArgs fields as JSON")
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--experiment", default="finetune")
    p.add_argument("--force", action="store_true")
    ns = p.parse_args(argv)
    with use_running_server_or_temporary():
        out = finetune(corpus_dir=ns.corpus_dir, register_as=ns.register_as, args=ns.args,
                       eval_fraction=ns.eval_fraction, nproc_per_node=ns.nproc_per_node, experiment=ns.experiment,
                       force=ns.force)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
