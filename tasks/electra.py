"""split_electra (ELECTRA only): the generator and the discriminator as two separate models, each logged on the
run and registered under its own name (<register_as>-generator, <register_as>-discriminator).

The generator is an ordinary masked LM (transformers flavour, fill-mask). The discriminator has no transformers
pipeline task, so it is a pyfunc model that returns each token's probability of having been replaced, with its HF
folder as an artifact (a bare artifact folder cannot be registered).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from . import tracking
from .common import logger
from .models import CHAMPION, log_transformers_model, pip_requirements, set_alias_if_first

PYFUNC_CODE = Path(__file__).with_name("discriminator_pyfunc.py")


def electra_parts(output_dir: str) -> tuple[Path, Path]:
    out = Path(output_dir)
    generator, discriminator = out / "generator_model", out / "discriminator_model"
    missing = [str(p) for p in (generator, discriminator) if not (p / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"{output_dir}: the ELECTRA training output lacks {', '.join(missing)}")
    return generator, discriminator


def log_discriminator(run_id: str, folder: Path, register_as: str | None, tags: dict):
    import mlflow

    tracking.use_store()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="discriminator", python_model=str(PYFUNC_CODE),
                                       artifacts={"discriminator": str(folder)},
                                       pip_requirements=pip_requirements() + ["pandas"],
                                       registered_model_name=register_as, tags=tags,
                                       input_example=["the quick brown fox"])
    if not register_as:
        return None
    return tracking.client().get_model_version(register_as, str(info.registered_model_version))


@task(name="split_electra", cache_policy=NO_CACHE)
def split_electra(output_dir: str, register_as: str | None = None, parent_run_id: str | None = None,
                  tags: dict | None = None) -> dict:
    generator, discriminator = electra_parts(output_dir)
    names = {"generator": f"{register_as}-generator" if register_as else None,
             "discriminator": f"{register_as}-discriminator" if register_as else None}
    out: dict = {}
    with tracking.child_run(parent_run_id, "split_electra") as run_id:
        if run_id is None:
            return {"generator": str(generator), "discriminator": str(discriminator)}
        tags = {"model_type": "electra", **(tags or {})}
        gen = log_transformers_model(run_id, str(generator), "generator", "fill-mask", True, names["generator"],
                                     {**tags, "part": "generator"})
        disc = log_discriminator(run_id, discriminator, names["discriminator"], {**tags, "part": "discriminator"})
        for part, mv in (("generator", gen), ("discriminator", disc)):
            if mv is not None:
                set_alias_if_first(mv.name, CHAMPION, mv.version)
                out[part] = {"name": mv.name, "version": str(mv.version)}
                logger().info("split_electra: %s registered as %s version %s", part, mv.name, mv.version)
    return {"run_id": run_id, **out}
