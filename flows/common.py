"""What the flows' command lines share: a Prefect server to run against."""

from __future__ import annotations

import contextlib


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


def none_if_empty(value: str | None) -> str | None:
    """MLproject parameters cannot be absent: an empty string stands for "not given"."""
    return value or None


def _flow_name(root, entrypoint: str) -> str:
    """The name Prefect knows a flow by (its deployments are <flow name>/<deployment>): the `@flow(name=...)` in
    the entrypoint's file, else the function's name."""
    import re

    path, _, function = entrypoint.partition(":")
    try:
        source = (root / path).read_text()
    except OSError:
        return function
    m = re.search(r'@flow\(name="([^"]+)"[^)]*\)\s*\ndef ' + re.escape(function) + r"\b", source)
    return m[1] if m else function


def deployments_help(flow_name: str) -> str:
    """For --help: the deployments of flow `flow_name` (prefect.yaml) with the parameters each one sets, and the
    presets `args` go over. Reads files only (no prefect, no torch), so --help answers at once."""
    from pathlib import Path

    import yaml

    from tasks.presets import describe

    root = Path(__file__).resolve().parents[1]
    lines = ["deployments (prefect.yaml; prefect deployment run NAME --watch --params '{...}'):"]
    for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]:
        flow = _flow_name(root, d.get("entrypoint", ""))
        if flow != "node":  # started by the pretrain stage, never by hand
            params = ", ".join(f"{k}={v}" for k, v in (d.get("parameters") or {}).items())
            lines.append(f"  {flow}/{d['name']}: {params or 'no parameters of its own'}")
            lines.append(f"    {d.get('description', '')}")
    lines.append(f"  each option of python -m flows.{flow_name} above is a parameter of its deployments too "
                 "(--model-type -> model_type; args as a JSON object)")
    lines.append("presets (tasks/presets.py; --preset NAME, or the preset parameter; args go over them key by key):")
    lines += [f"  {line}" for line in describe().splitlines()]
    return "\n".join(lines)
