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
