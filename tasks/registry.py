"""The registry stage: find the champion of a registered name, fetch it as a folder, register a trained model (or
an ELECTRA pair, as <name>-generator and <name>-discriminator), and promote a challenger when it is better.

A registered name's `champion` alias is the version the nightly fine-tuning starts from; the first version ever
registered under a name is its champion, later ones become `challenger` and move `champion` only with a strictly
lower perplexity. A pair's two aliases always move together. The content hash of the corpus a name was last
trained on is kept as a tag on the registered model (for a pair, on the discriminator).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmcore.objectives.electra import DISCRIMINATOR_DIR

from . import tracking
from .common import logger, pipeline_home
from .models import (
    log_discriminator,
    log_transformers_model,
    model_type_of,
    pair_parts,
    pipeline_task,
    save_model_folder,
    save_pair_folder,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
CORPUS_TAG = "last_trained_corpus"


def pair_names(name: str) -> tuple[str, str]:
    """The two registered models an ELECTRA run registered as `name` writes."""
    return f"{name}-generator", f"{name}-discriminator"


def _registered(name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client().get_registered_model(name)
        return True
    except MlflowException:
        return False


def _champion_version(name: str, hint: str):
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        raise ValueError(f"register_as={hint!r}: {name!r} has no version with alias {CHAMPION!r} (train one "
                         f"first: the pretrain flow with register_as={hint!r}) ({e})") from None


@task(name="find_champion", cache_policy=NO_CACHE)
def find_champion(register_as: str) -> dict:
    """What `register_as`@champion is, without downloading it: {"name", "pair", "versions" ({registered name:
    version}), "version", "holder" (the name keeping the corpus tag), "last_corpus_hash"}."""
    c = tracking.client()
    if _registered(register_as):
        mv = _champion_version(register_as, register_as)
        versions, holder = {register_as: str(mv.version)}, register_as
    elif all(_registered(n) for n in pair_names(register_as)):
        gen, disc = (_champion_version(n, register_as) for n in pair_names(register_as))
        if gen.run_id != disc.run_id:
            raise ValueError(f"register_as={register_as!r}: the {CHAMPION} generator (v{gen.version}, run "
                             f"{gen.run_id}) and discriminator (v{disc.version}, run {disc.run_id}) come from "
                             "different runs; point both aliases at versions of one run")
        versions, holder = {gen.name: str(gen.version), disc.name: str(disc.version)}, disc.name
    else:
        raise ValueError(f"register_as={register_as!r}: no model registered under that name (nor an ELECTRA pair "
                         f"{' + '.join(pair_names(register_as))}); train one first: the pretrain flow with "
                         f"register_as={register_as!r}")
    return {"name": register_as, "pair": len(versions) == 2, "versions": versions, "version": versions[holder],
            "holder": holder, "last_corpus_hash": c.get_registered_model(holder).tags.get(CORPUS_TAG)}


@task(name="find_version", cache_policy=NO_CACHE)
def find_version(model: str, version: str | int | None = None, alias: str | None = None) -> dict:
    """A registered version, in find_champion's shape (fetch_champion fetches it): `model` names a registered
    model or an ELECTRA pair (<model>-generator + <model>-discriminator: the discriminator's version, and the
    generator logged by the same run); `version` a number, else `alias` (default: champion)."""
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    pair = not _registered(model) and all(_registered(n) for n in pair_names(model))
    if not pair and not _registered(model):
        raise ValueError(f"model={model!r}: no model registered under that name (nor an ELECTRA pair "
                         f"{' + '.join(pair_names(model))})")
    holder = pair_names(model)[1] if pair else model
    try:
        mv = (c.get_model_version(holder, str(version)) if version is not None
              else c.get_model_version_by_alias(holder, alias or CHAMPION))
    except MlflowException as e:
        raise ValueError(f"model={model!r}: no version {version if version is not None else repr(alias or CHAMPION)}"
                         f" of {holder!r} ({e})") from None
    versions = {holder: str(mv.version)}
    if pair:
        gen = [v for v in c.search_model_versions(f"name='{pair_names(model)[0]}'") if v.run_id == mv.run_id]
        if not gen:
            raise ValueError(f"model={model!r}: {holder} v{mv.version} has no generator version from its run")
        versions = {gen[0].name: str(gen[0].version), **versions}
    return {"name": model, "pair": pair, "versions": versions, "version": str(mv.version), "holder": holder,
            "last_corpus_hash": None}


@task(name="fetch_champion", cache_policy=NO_CACHE)
def fetch_champion(champion: dict) -> dict:
    """The champion as a local folder the engine trains and evaluates from (written once per version):
    {"folder", "model_type"}."""
    versions = champion["versions"]
    if champion["pair"]:
        (gen, gv), (disc, dv) = versions.items()
        folder = pipeline_home() / "registered" / f"{champion['name']}-g{gv}-d{dv}"
        if not (folder / DISCRIMINATOR_DIR / "config.json").exists():
            save_pair_folder(f"models:/{gen}/{gv}", f"models:/{disc}/{dv}", folder)
        model_type = model_type_of(pair_parts(str(folder))[0])
    else:
        (name, version), = versions.items()
        folder = pipeline_home() / "registered" / f"{name}-v{version}"
        if not (folder / "config.json").exists():
            from lmcore.base.atomic import replace_folder

            tracking.use_store()
            replace_folder(folder, lambda tmp: save_model_folder(f"models:/{name}/{version}", tmp))
        model_type = model_type_of(folder)
    logger().info("%s: %s in %s", champion["name"], _versions(versions), folder)
    return {"folder": str(folder), "model_type": model_type}


@task(name="register", cache_policy=NO_CACHE)
def register(model_type: str, output_dir: str, register_as: str | None, mlm: bool = True, tags: dict | None = None,
             parent_run_id: str | None = None, first_is_champion: bool = True,
             version_tags: dict | None = None) -> dict:
    """Log the trained model on its own child run and register it as `register_as` (an ELECTRA pair as
    <register_as>-generator and <register_as>-discriminator). The first version of a name becomes its champion
    when `first_is_champion`. `version_tags` (the downstream figures) go on each registered version. Returns {"run_id", "versions": {registered name: version}} plus "name"/"version"
    for a single model and "generator"/"discriminator" for a pair."""
    parts = pair_parts(output_dir)
    with tracking.child_run(parent_run_id, "register") as run_id:
        if run_id is None:
            return {"versions": {}}
        tags = {"model_type": model_type, **(tags or {})}
        if parts is None:
            logged = {"model": log_transformers_model(run_id, output_dir, "model", pipeline_task(model_type, mlm),
                                                      register_as, tags)}
        else:
            gen_name, disc_name = pair_names(register_as) if register_as else (None, None)
            logged = {"generator": log_transformers_model(run_id, str(parts[0]), "generator", "fill-mask", gen_name,
                                                          {**tags, "part": "generator"}),
                      "discriminator": log_discriminator(run_id, parts[1], disc_name,
                                                         {**tags, "part": "discriminator"})}
        out: dict = {"run_id": run_id, "versions": {}}
        for part, mv in logged.items():
            if mv is None:
                continue
            for key, value in {"model_type": model_type, **(version_tags or {})}.items():
                tracking.client().set_model_version_tag(mv.name, mv.version, key, str(value))
            entry = {"name": mv.name, "version": str(mv.version)}
            out["versions"][mv.name] = entry["version"]
            if part == "model":
                out.update(entry)
            else:
                out[part] = entry
            logger().info("Registered %s version %s", mv.name, mv.version)
        if first_is_champion:
            for name, version in out["versions"].items():
                if CHAMPION not in tracking.client().get_registered_model(name).aliases:
                    tracking.client().set_registered_model_alias(name, CHAMPION, version)
                    logger().info("%s version %s is the first: alias %r", name, version, CHAMPION)
    return out


@task(name="promote", cache_policy=NO_CACHE)
def promote(champion: dict, challenger_versions: dict[str, str], champion_perplexity: float,
            challenger_perplexity: float, corpus_hash: str | None = None, parent_run_id: str | None = None,
            promote_on: str = "perplexity", champion_downstream: dict | None = None,
            challenger_downstream: dict | None = None) -> dict:
    """The challenger gets the alias `challenger`, and `champion` too when it is better (a pair's two aliases move
    together); the corpus it was trained on is remembered on the registered model. Better: a strictly lower
    perplexity, or with promote_on a downstream metric (downstream.<task>.accuracy, ...) a mean above the
    champion's by more than their pooled standard deviation (`downstream_decision`). The decision and the figures
    go into the run log and onto the parent run."""
    c = tracking.client()
    for name, version in challenger_versions.items():
        c.set_registered_model_alias(name, CHALLENGER, version)
    promoted = challenger_perplexity < champion_perplexity
    on_downstream = ""
    if promote_on != "perplexity":
        promoted, on_downstream = downstream_decision(promote_on, champion_downstream or {},
                                                      challenger_downstream or {})
    if promoted:
        for name, version in challenger_versions.items():
            c.set_registered_model_alias(name, CHAMPION, version)
    if corpus_hash:
        c.set_registered_model_tag(champion["holder"], CORPUS_TAG, corpus_hash)
    new, old = _versions(challenger_versions), _versions(champion["versions"])
    decision = (f"{new} perplexity {challenger_perplexity:.4f} vs {CHAMPION} {old} {champion_perplexity:.4f}"
                + (f"; promote_on {on_downstream}" if on_downstream else "") + ": "
                + (f"promoted to {CHAMPION}" if promoted else f"not better, {CHAMPION} stays {old}"))
    logger().info("%s", decision)
    tracking.log_metrics(parent_run_id, {"perplexity": challenger_perplexity})
    tracking.set_tags(parent_run_id, {"decision": "promoted" if promoted else "kept champion",
                                      "decision_detail": decision, "outcome": "trained", "promote_on": promote_on})
    return {"promoted": promoted, "decision": decision,
            "champion_versions": dict(challenger_versions) if promoted else dict(champion["versions"])}


def _versions(versions: dict[str, str]) -> str:
    return " + ".join(f"{name} v{version}" for name, version in versions.items())


def downstream_decision(metric: str, champion: dict, challenger: dict) -> tuple[bool, str]:
    """Promote on a downstream metric (`downstream.<task>.accuracy`, `.f1`, `.mcc`; higher is better): only when
    the challenger's mean over seeds beats the champion's by more than their pooled standard deviation, so a
    difference within seed noise keeps the champion. Returns (promoted, the reason with every figure)."""
    from lmcore.downstream import pooled_std

    missing = [f"{who} {k}" for who, figures in (("champion", champion), ("challenger", challenger))
               for k in (metric, f"{metric}_std") if k not in figures]
    if missing:
        raise ValueError(f"promote_on={metric!r}: no figure for {', '.join(missing)} (is the task in downstream?)")
    old, new = champion[metric], challenger[metric]
    old_std, new_std = champion[f"{metric}_std"], challenger[f"{metric}_std"]
    pooled = pooled_std(old_std, new_std)
    promoted = new - old > pooled
    return promoted, (f"{metric} {new:.4f} ± {new_std:.4f} vs {old:.4f} ± {old_std:.4f}: difference "
                      f"{new - old:+.4f} {'>' if promoted else '<='} pooled std {pooled:.4f}")


def recorded_downstream(champion: dict, task_keys: dict[str, str]) -> dict | None:
    """The downstream figures recorded on the champion's registered version (a pair's: on the discriminator) when
    every task in `task_keys` was measured with that key; None when any is missing or was measured otherwise."""
    tags = tracking.client().get_model_version(champion["holder"], champion["version"]).tags
    if any(tags.get(f"downstream.{name}.task_key") != key for name, key in task_keys.items()):
        return None
    prefixes = tuple(f"downstream.{name}." for name in task_keys)
    return {k: float(v) for k, v in tags.items() if k.startswith(prefixes) and not k.endswith(".task_key")}


@task(name="tag_version", cache_policy=NO_CACHE)
def tag_version(versions: dict[str, str], tags: dict) -> None:
    """Put `tags` (downstream figures measured after the fact) on registered versions {name: version}."""
    for name, version in versions.items():
        for key, value in tags.items():
            tracking.client().set_model_version_tag(name, version, key, str(value))
