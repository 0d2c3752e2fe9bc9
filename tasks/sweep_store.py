"""Where sweeps keep their Optuna studies: the pipeline's own database.

By default a SQLite file `sweeps.db` beside MLflow's `mlflow.db`; when MLflow's store is a PostgreSQL server (the
team stores), the same server and database, in a schema `sweeps` of its own (Optuna and MLflow would otherwise share
the table `alembic_version`, and each would read the other's migrations as its own). SWEEP_STORAGE, a SQLAlchemy
URL, puts the studies anywhere else.

A study's name is the sweep's name and a digest of what defines it (the shared parameters, the space, the method
and the objective), so resubmitting a sweep resumes its study and two different sweeps never share one by accident.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import tracking
from .common import digest, pipeline_home

SCHEMA = "sweeps"


def storage_url() -> str:
    explicit = os.environ.get("SWEEP_STORAGE")
    if explicit:
        return explicit
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve().parent / 'sweeps.db'}"
    if uri.split(":", 1)[0].split("+")[0] == "postgresql":
        parts = urlsplit(uri)
        query = dict(parse_qsl(parts.query))
        query["options"] = f"-csearch_path={SCHEMA}"
        return urlunsplit(parts._replace(query=urlencode(query)))
    return f"sqlite:///{pipeline_home() / 'sweeps.db'}"


def study_name(name: str, base: dict, space: dict, method: str, objective: tuple) -> str:
    return f"{name}-{digest(base, space, method, list(objective))[:12]}"


def storage(url: str):
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # the sweep says what each trial did, once, in its own words
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # Trials report from their own processes while the sweep records others: wait for the lock, not fail.
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
        if f"search_path%3D{SCHEMA}" in url or f"search_path={SCHEMA}" in url:
            _create_schema(url)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _create_schema(url: str) -> None:
    import sqlalchemy

    parts = urlsplit(url)
    plain = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in parse_qsl(parts.query)
                                                      if k != "options"])))
    engine = sqlalchemy.create_engine(plain)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    finally:
        engine.dispose()


def open_study(url: str, name: str, direction: str, sampler=None, pruner=None):
    import optuna

    # No pruner is Optuna's NopPruner: left None, Optuna would put its MedianPruner in.
    return optuna.create_study(storage=storage(url), study_name=name, direction=direction, sampler=sampler,
                               pruner=pruner or optuna.pruners.NopPruner(), load_if_exists=True)


def load_study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage(url))
