"""Where training metrics go. The loop is handed a tracker; it never imports a tracking library itself.

`NullTracker` (the default) records nothing. `MLflowTracker` logs to the active MLflow run (the pipeline creates
the run and passes its id in MLFLOW_RUN_ID; only rank 0 ever builds one). `TensorBoardTracker` writes event files
(`args.tensorboard_dir`); `FanoutTracker` sends the same calls to several trackers, and `tracker_for` adds
TensorBoard to whatever tracker a run already has.
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


class TensorBoardTracker:
    """Writes TensorBoard event files into `log_dir`: every numeric metric as a scalar at its step, the run's
    parameters once as a text table. Needs the `tensorboard` package; without it, constructing one fails at once
    (before any training work) with an error that says what to install."""

    def __init__(self, log_dir: str):
        try:
            import tensorboard  # noqa: F401 - torch's SummaryWriter imports it lazily, and fails less clearly
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise TensorBoardMissingError(
                f"tensorboard_dir={log_dir!r} needs the `tensorboard` package, which is not installed: "
                f"run `pip install tensorboard`, or set tensorboard_dir=None") from e
        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def log_params(self, params: dict) -> None:
        rows = "\n".join(f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(params.items(), key=lambda kv: str(kv[0])))
        self.writer.add_text("params", "| setting | value |\n|---|---|\n" + rows)

    def log_metrics(self, metrics: dict, step: int) -> None:
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # text and other non-numbers are not scalars
            self.writer.add_scalar(str(name), number, int(step))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass  # event files hold scalars and text; artifacts belong to MLflow

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TensorBoardMissingError(ImportError):
    """`tensorboard_dir` is set but the `tensorboard` package cannot be imported."""


def _cell(value) -> str:
    # A "|" would end the markdown cell early; newlines would end the row.
    return str(value).replace("|", "\\|").replace("\n", " ")


class FanoutTracker:
    """Sends every call to each of `trackers`, in order (MLflow and TensorBoard get the same per-step metrics)."""

    def __init__(self, *trackers):
        self.trackers = [t for t in trackers if t is not None]

    def log_params(self, params: dict) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics: dict, step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        for t in self.trackers:
            t.log_artifact(path, artifact_path)

    def flush(self) -> None:
        self._forward("flush")

    def close(self) -> None:
        self._forward("close")

    def _forward(self, method: str) -> None:
        for t in self.trackers:
            call = getattr(t, method, None)
            if callable(call):
                call()


def tracker_for(args, tracker):
    """`tracker` plus TensorBoard when `args.tensorboard_dir` is set, on rank 0 only (every rank writing event
    files into one folder would interleave their scalars). Other ranks, and runs without the setting, get
    `tracker` unchanged (which may be None)."""
    log_dir = getattr(args, "tensorboard_dir", None)
    if not log_dir or int(os.environ.get("RANK", "0")) != 0:
        return tracker
    return FanoutTracker(tracker, TensorBoardTracker(log_dir))
