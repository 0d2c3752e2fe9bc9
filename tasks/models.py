"""Trained models into MLflow and back out: a single model logged with the transformers flavour (fill-mask or
text-generation), an ELECTRA pair as two models (the generator with the transformers flavour, the discriminator as
a pyfunc model with its Hugging Face folder as an artifact, since it has no pipeline task and a bare artifact folder
cannot be registered), and a registered version saved back as a folder the engine trains from.

Requirements are given explicitly: inferring them makes MLflow import optional vision packages that are not
installed. Which head a model type has and where the pair's halves live come from the engine (`lmcore.models.registry`,
`lmcore.objectives.electra`), not from copies here.
"""

from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lmcore.base.atomic import replace_folder
from lmcore.objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR
from lmcore.models.registry import get_model_type

from . import tracking

PYFUNC_CODE = Path(__file__).with_name("discriminator_pyfunc.py")


def pip_requirements() -> list[str]:
    out = []
    for name in ("torch", "transformers", "tokenizers", "safetensors", "numpy"):
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


def pipeline_task(model_type: str, mlm: bool = True) -> str:
    """The transformers pipeline a trained model serves: fill-mask for a masked LM, text-generation otherwise."""
    return "fill-mask" if mlm and get_model_type(model_type).mlm_cls is not None else "text-generation"


def pair_parts(output_dir: str) -> tuple[Path, Path] | None:
    """(generator folder, discriminator folder) of a trained ELECTRA pair; None for a single model."""
    out = Path(output_dir)
    generator, discriminator = out / GENERATOR_DIR, out / DISCRIMINATOR_DIR
    if not generator.exists() and not discriminator.exists():
        return None
    missing = [str(p) for p in (generator, discriminator) if not (p / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"{output_dir}: the ELECTRA training output lacks {', '.join(missing)}")
    return generator, discriminator


def log_transformers_model(run_id: str, model_dir: str, name: str, hf_task: str, register_as: str | None,
                           tags: dict | None = None):
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


def log_discriminator(run_id: str, folder: Path, register_as: str | None, tags: dict | None = None):
    """Log an ELECTRA discriminator folder as the pyfunc model of discriminator_pyfunc.py; register it when asked."""
    import mlflow

    tracking.use_store()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="discriminator", python_model=str(PYFUNC_CODE),
                                       artifacts={"discriminator": str(folder)},
                                       pip_requirements=pip_requirements() + ["pandas"],
                                       registered_model_name=register_as, tags=tags,
                                       input_example=["the quick brown fox"])
    return _version_of(info, register_as)


def _version_of(info, register_as: str | None):
    if not register_as:
        return None
    return tracking.client().get_model_version(register_as, str(info.registered_model_version))


def save_model_folder(uri: str, folder: Path) -> None:
    """A transformers-flavour logged model as a plain HF folder (model + tokenizer) the engine loads."""
    import mlflow

    components = mlflow.transformers.load_model(uri, return_type="components")
    components["model"].save_pretrained(str(folder))
    components["tokenizer"].save_pretrained(str(folder))


def save_pair_folder(generator_uri: str, discriminator_uri: str, folder: Path) -> None:
    """A registered generator and discriminator as one pair folder in the layout the engine trains from."""
    import mlflow
    from mlflow.models import Model

    def write(tmp: Path) -> None:
        save_model_folder(generator_uri, tmp / GENERATOR_DIR)
        # The discriminator is a pyfunc whose artifact is the HF folder; its place inside is written in MLmodel.
        local = Path(mlflow.artifacts.download_artifacts(discriminator_uri, dst_path=str(tmp / "download")))
        inner = Model.load(str(local)).flavors["python_function"]["artifacts"]["discriminator"]["path"]
        shutil.move(str(local / inner), str(tmp / DISCRIMINATOR_DIR))
        shutil.rmtree(tmp / "download")

    tracking.use_store()
    replace_folder(folder, write)


def model_type_of(folder: Path) -> str:
    import json

    return json.loads((Path(folder) / "config.json").read_text())["model_type"]
