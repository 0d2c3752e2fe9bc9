"""Trained models into MLflow: logged models on a run, registered under a name, and back out again as a folder the
engine can fine-tune from.

MLM and CLM models are logged with the transformers flavour (task fill-mask / text-generation). Requirements are
given explicitly: inferring them makes MLflow import optional vision packages that are not installed.
"""

from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.atomic import replace_folder

from . import tracking
from .common import logger, pipeline_home

CHAMPION = "champion"
CHALLENGER = "challenger"
CORPUS_TAG = "last_trained_corpus"
CAUSAL_TYPES = ("gpt2", "openai-gpt")


def pip_requirements() -> list[str]:
    out = []
    for name in ("torch", "transformers", "tokenizers", "safetensors", "numpy"):
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


def pipeline_task(model_type: str, mlm: bool = True) -> str:
    return "text-generation" if model_type in CAUSAL_TYPES or not mlm else "fill-mask"


def log_transformers_model(run_id: str, model_dir: str, name: str, hf_task: str, mlm: bool,
                           register_as: str | None, tags: dict | None = None):
    """Log the HF folder `model_dir` as a transformers-flavour model on `run_id`; register it when asked.
    Returns the registered ModelVersion (or None)."""
    import mlflow
    import transformers as hf

    tracking.use_store()
    cls = hf.AutoModelForMaskedLM if hf_task == "fill-mask" else hf.AutoModelForCausalLM
    components = {"model": cls.from_pretrained(model_dir), "tokenizer": hf.AutoTokenizer.from_pretrained(model_dir)}
    with mlflow.start_run(run_id=run_id):
        info = mlflow.transformers.log_model(components, name=name, task=hf_task, pip_requirements=pip_requirements(),
                                             registered_model_name=register_as, tags=tags)
    return _version_of(info, register_as)


def _version_of(info, register_as: str | None):
    if not register_as:
        return None
    version_number = info.registered_model_version
    c = tracking.client()
    mv = c.get_model_version(register_as, str(version_number))
    logger().info("Registered %s version %s", register_as, mv.version)
    return mv


def set_alias_if_first(name: str, alias: str, version_number: str) -> bool:
    """The first version ever registered under `name` becomes its champion: there is nothing to compete with."""
    c = tracking.client()
    if alias in c.get_registered_model(name).aliases:
        return False
    c.set_registered_model_alias(name, alias, version_number)
    return True


@task(name="register_model", cache_policy=NO_CACHE)
def register_model(model_type: str, model_dir: str, register_as: str | None = None, mlm: bool = True,
                   tags: dict | None = None, parent_run_id: str | None = None, first_is_champion: bool = True) -> dict:
    """Log the trained MLM/CLM model on its own child run, and register it as `register_as` when given."""
    hf_task = pipeline_task(model_type, mlm)
    with tracking.child_run(parent_run_id, "register_model") as run_id:
        if run_id is None:
            return {}
        mv = log_transformers_model(run_id, model_dir, "model", hf_task, mlm, register_as,
                                    {"model_type": model_type, **(tags or {})})
        if mv is None:
            return {"run_id": run_id}
        tracking.client().set_model_version_tag(register_as, mv.version, "model_type", model_type)
        if first_is_champion and set_alias_if_first(register_as, CHAMPION, mv.version):
            logger().info("%s version %s is the first: alias %r", register_as, mv.version, CHAMPION)
        return {"run_id": run_id, "name": register_as, "version": str(mv.version)}


def champion_folder(name: str) -> tuple[str, str, str]:
    """The model registered as `name`@champion as a local HF folder: (folder, model_type, version)."""
    tracking.use_store()
    c = tracking.client()
    try:
        mv = c.get_model_version_by_alias(name, CHAMPION)
    except Exception as e:
        raise ValueError(f"register_as={name!r}: no model registered under that name with alias {CHAMPION!r} "
                         f"(train one first: the pretrain flow with register_as={name!r}) ({e})") from None
    folder = pipeline_home() / "registered" / f"{name}-v{mv.version}"
    if not (folder / "config.json").exists():
        replace_folder(folder, lambda tmp: _save_transformers_model(f"models:/{name}/{mv.version}", tmp))
    model_type = mv.tags.get("model_type") or _model_type_of(folder)
    return str(folder), model_type, str(mv.version)


def electra_names(name: str) -> tuple[str, str]:
    """The two registered models an ELECTRA run registered as `name` writes."""
    return f"{name}-generator", f"{name}-discriminator"


def champion_pair_folder(name: str) -> tuple[str, dict[str, str]]:
    """ELECTRA registered as <name>-generator and <name>-discriminator: both champions as one local pair folder
    (generator_model/ + discriminator_model/, the layout the engine trains from). Returns (folder, {registered
    name: version}). The two champions must come from one run: a pair mixed from two trainings is refused."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    tracking.use_store()
    c = tracking.client()
    parts = {}
    for registered in electra_names(name):
        try:
            parts[registered] = c.get_model_version_by_alias(registered, CHAMPION)
        except MlflowException as e:
            raise ValueError(f"register_as={name!r}: {registered!r} has no version with alias {CHAMPION!r} (an "
                             f"ELECTRA model is registered as {name}-generator and {name}-discriminator by the "
                             f"pretrain flow with register_as={name!r}) ({e})") from None
    gen, disc = parts.values()
    if gen.run_id != disc.run_id:
        raise ValueError(f"register_as={name!r}: the {CHAMPION} generator (v{gen.version}, run {gen.run_id}) and "
                         f"discriminator (v{disc.version}, run {disc.run_id}) come from different runs; point "
                         f"both aliases at versions of one run")
    folder = pipeline_home() / "registered" / f"{name}-g{gen.version}-d{disc.version}"
    if not (folder / "discriminator_model" / "config.json").exists():
        def write(tmp: Path) -> None:
            _save_transformers_model(f"models:/{gen.name}/{gen.version}", tmp / "generator_model")
            # The discriminator is a pyfunc whose artifact is the HF folder; its place inside is written in MLmodel.
            local = Path(mlflow.artifacts.download_artifacts(f"models:/{disc.name}/{disc.version}",
                                                             dst_path=str(tmp / "download")))
            inner = Model.load(str(local)).flavors["python_function"]["artifacts"]["discriminator"]["path"]
            shutil.move(str(local / inner), str(tmp / "discriminator_model"))
            shutil.rmtree(tmp / "download")

        replace_folder(folder, write)
    return str(folder), {gen.name: str(gen.version), disc.name: str(disc.version)}


def _save_transformers_model(uri: str, folder: Path) -> None:
    """A transformers-flavour logged model as a plain HF folder (model + tokenizer) the engine loads."""
    import mlflow

    components = mlflow.transformers.load_model(uri, return_type="components")
    components["model"].save_pretrained(str(folder))
    components["tokenizer"].save_pretrained(str(folder))


def _model_type_of(folder: Path) -> str:
    import json

    return json.loads((Path(folder) / "config.json").read_text())["model_type"]
