"""What both flows share: checking parameters before any work, and the flow's MLflow parent run."""

from __future__ import annotations

import contextlib
import os
from typing import Literal

from lmcore import ArgsError, LanguageModelingArgs
from lmcore.corpus import resolve_files
from tasks import tracking

ModelType = Literal["bert", "camembert", "distilbert", "electra", "gpt2", "longformer", "openai-gpt", "roberta"]

PIPELINE_OWNED = ("output_dir", "tokenizer_name", "cache_dir", "overwrite_output_dir")
"""Settings the pipeline chooses itself (content-addressed folders); a value passed in args is ignored."""

ENGINE_ONLY = ("encoding", "use_hf_datasets", "dataset_class", "no_save", "local_rank")
"""Settings the engine honours but the pipeline cannot: prepare_corpus reads UTF-8 text files and writes the
prepared corpus the engine then reads, the pipeline must save the model it registers, and it launches the
processes itself. Refused with a reason rather than ignored."""


def check_parameters(corpus=None, args: dict | None = None, nproc_per_node: int = 1, eval_corpus=None,
                     model_name: str | None = None) -> dict:
    """Reject bad parameters with a message naming each one, before anything expensive; returns args without the
    settings the pipeline owns."""
    problems = []
    if not isinstance(args, dict):
        raise ArgsError(f"args: must be a dict of LanguageModelingArgs fields, not {type(args).__name__}")
    try:
        problems += LanguageModelingArgs.from_any(args).problems()
    except ArgsError as e:
        problems.append(f"args: {e}")
    for name in ENGINE_ONLY:
        if name in args and args[name] not in (None, False, -1):
            problems.append(f"args.{name}={args[name]!r}: not available in the pipeline (prepare_corpus reads "
                            "UTF-8 text files, the pipeline saves and registers the model, and launches the "
                            "processes itself); use the engine directly (lmcore.LanguageModelingModel)")
    if not isinstance(nproc_per_node, int) or not 1 <= nproc_per_node <= 64:
        problems.append(f"nproc_per_node={nproc_per_node!r}: must be an integer from 1 to 64")
    if model_name and not os.path.isdir(model_name) and model_name.startswith((".", "/", "~")):
        problems.append(f"model_name={model_name!r}: no such directory")
    if problems:
        raise ArgsError("invalid parameters:\n  " + "\n  ".join(problems))
    for paths in (corpus, eval_corpus):
        if paths is not None:
            resolve_files(paths)  # CorpusError names every bad file
    return {k: v for k, v in args.items() if k not in PIPELINE_OWNED}


def flow_run_tags() -> dict:
    from prefect.runtime import deployment, flow_run

    return {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.flow_name": flow_run.flow_name, "prefect.deployment": deployment.name,
            "prefect.deployment_id": deployment.id}


@contextlib.contextmanager
def parent_run(experiment: str, tags: dict | None = None):
    """The flow run's MLflow parent run, ended FINISHED / FAILED / KILLED with the flow. Under `mlflow run`
    (MLFLOW_RUN_ID set) that run is the parent, and `mlflow run` ends it."""
    from prefect.runtime import flow_run

    tags = {**flow_run_tags(), **(tags or {})}
    adopted = os.environ.get("MLFLOW_RUN_ID")
    if adopted:
        for k, v in tags.items():
            if v is not None:
                tracking.client().set_tag(adopted, k, str(v))
        yield adopted
        return
    run_id = tracking.start_run(experiment, flow_run.name or experiment, tags=tags)
    with tracking.tracked(run_id):
        yield run_id


@contextlib.contextmanager
def use_running_server_or_temporary():
    """For the command lines (and `mlflow run`): use the Prefect server scripts/up started when it answers,
    otherwise a temporary one for this process, instead of failing on a refused connection."""
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2)
            yield
            return
        except OSError:
            print(f"No Prefect server at {url} (scripts/up starts one): using a temporary server", flush=True)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        yield
