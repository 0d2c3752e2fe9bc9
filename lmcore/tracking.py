"""Where training metrics go. The loop is handed a tracker; it never imports a tracking library itself.

`NullTracker` (the default) records nothing. `MLflowTracker` logs to the active MLflow run (the pipeline creates
the run and passes its id in MLFLOW_RUN_ID; only rank 0 ever builds one).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

log = logging.getLogger(__name__)


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


class MLflowTracker:
    """Logs to one existing MLflow run (the pipeline creates it and ends it; this never does).

    Metrics are buffered and sent in batches with `MlflowClient.log_batch`: one HTTP/SQL round trip per step would
    cost more than a tiny model's step. A tracking failure is logged as a warning and never stops training.
    """

    MAX_BATCH = 1000  # MLflow's own per-request limit on metrics
    FLUSH_SECONDS = 5.0

    def __init__(self, run_id: str, tracking_uri: str | None = None):
        from mlflow.tracking import MlflowClient  # lazily: the engine runs without MLflow installed

        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._pending: list = []
        self._last_flush = time.time()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        self._safely(lambda: self.client.log_batch(self.run_id, params=items))

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for k, v in metrics.items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            self._pending.append(Metric(str(k), value, now, int(step)))
        if len(self._pending) >= self.MAX_BATCH or time.time() - self._last_flush > self.FLUSH_SECONDS:
            self.flush()

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.flush()
        self._safely(lambda: self.client.log_artifact(self.run_id, path, artifact_path))

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.MAX_BATCH], self._pending[self.MAX_BATCH:]
            self._safely(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self._last_flush = time.time()

    close = flush

    def _safely(self, call) -> None:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - losing a metric must never lose a training run
            log.warning("MLflow tracking failed (training goes on): %s", e)


def tracker_from_environment():
    """An MLflowTracker for the run named by MLFLOW_RUN_ID on rank 0, else None (the engine's NullTracker)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or int(os.environ.get("RANK", "0")) != 0:
        return None
    return MLflowTracker(run_id, os.environ.get("MLFLOW_TRACKING_URI"))
