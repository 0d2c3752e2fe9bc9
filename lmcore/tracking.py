"""Where training metrics go. The loop is handed a tracker; it never imports a tracking library itself.

`NullTracker` (the default) records nothing. `MLflowTracker` logs to the active MLflow run (the pipeline creates
the run and passes its id in MLFLOW_RUN_ID; only rank 0 ever builds one).
"""

from __future__ import annotations

from typing import Protocol


class Tracker(Protocol):
    def log_params(self, params: dict) -> None: ...

    def log_metrics(self, metrics: dict, step: int) -> None: ...

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...


class NullTracker:
    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass


class ListTracker(NullTracker):
    """Keeps everything in memory: for tests and notebooks."""

    def __init__(self):
        self.params: dict = {}
        self.metrics: list[tuple[int, dict]] = []
        self.artifacts: list[str] = []

    def log_params(self, params: dict) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.artifacts.append(path)
