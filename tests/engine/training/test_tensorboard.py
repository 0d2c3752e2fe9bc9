"""`tensorboard_dir`: metrics written as TensorBoard event files, alongside any other tracker."""

from __future__ import annotations

import sys

import pytest

from lmcore.models.args import LanguageModelingArgs
from lmcore.training.tracking import (FanoutTracker, ListTracker, NullTracker, TensorBoardMissingError,
                                      TensorBoardTracker, tracker_for)

STEPS = [(1, {"train/loss": 5.5, "train/lr": 1e-3, "note": "text is skipped"}),
         (2, {"train/loss": 4.25, "train/lr": 2e-3}),
         (7, {"eval/perplexity": 30.0})]


def _scalars(log_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_read_back_from_event_files(tmp_path):
    tb = TensorBoardTracker(str(tmp_path / "tb"))
    tb.log_params({"learning_rate": 1e-3, "model_type": "bert", "odd|name": "a|b"})
    for step, metrics in STEPS:
        tb.log_metrics(metrics, step)
    tb.log_artifact(str(tmp_path))  # a no-op, never an error
    tb.close()
    scalars = _scalars(tmp_path / "tb")
    assert set(scalars) == {"train/loss", "train/lr", "eval/perplexity"}
    assert scalars["train/loss"] == [(1, 5.5), (2, 4.25)]
    assert scalars["train/lr"] == [(1, pytest.approx(1e-3)), (2, pytest.approx(2e-3))]
    assert scalars["eval/perplexity"] == [(7, 30.0)]


def test_fanout_sends_the_same_calls_to_every_tracker(tmp_path):
    memory = ListTracker()
    both = tracker_for(LanguageModelingArgs(tensorboard_dir=str(tmp_path / "tb")), memory)
    assert isinstance(both, FanoutTracker)
    both.log_params({"seed": 1})
    for step, metrics in STEPS:
        both.log_metrics(metrics, step)
    both.flush()
    both.close()
    assert memory.params == {"seed": 1} and memory.metrics == [(s, m) for s, m in STEPS]
    assert _scalars(tmp_path / "tb")["train/loss"] == [(1, 5.5), (2, 4.25)]


def test_tracker_for_without_tensorboard_dir_or_off_rank_zero(tmp_path, monkeypatch):
    null = NullTracker()
    assert tracker_for(LanguageModelingArgs(), null) is null
    assert tracker_for(LanguageModelingArgs(), None) is None
    monkeypatch.setenv("RANK", "1")
    assert tracker_for(LanguageModelingArgs(tensorboard_dir=str(tmp_path / "tb")), null) is null
    assert not (tmp_path / "tb").exists()


def test_missing_tensorboard_package_is_a_clear_error(tmp_path, monkeypatch):
    # A None entry makes `import tensorboard` raise ImportError, as if it were not installed.
    loaded = [m for m in sys.modules if m.startswith(("tensorboard.", "torch.utils.tensorboard"))]
    for name in loaded:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(TensorBoardMissingError, match=r"tensorboard_dir.*pip install tensorboard") as err:
        tracker_for(LanguageModelingArgs(tensorboard_dir=str(tmp_path / "tb")), None)
    assert isinstance(err.value, ImportError)
    assert not (tmp_path / "tb").exists()
