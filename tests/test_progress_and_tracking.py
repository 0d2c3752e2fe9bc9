"""What a user sees while training: progress lines with rate and ETA, and per-step metrics on the tracker."""

import logging

import pytest

from lmcore import LanguageModelingModel
from lmcore.tracking import ListTracker
from tests.conftest import tiny_args


def test_tracker_gets_every_step_and_the_log_shows_rate_mfu_and_eta(corpus, tmp_path, caplog):
    tracker = ListTracker()
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, max_steps=25, logging_steps=10),
                                  train_files=corpus["train"], tracker=tracker)
    with caplog.at_level(logging.INFO, logger="lmcore"):
        model.train_model(corpus["train"])
    steps = [s for s, _ in tracker.metrics]
    assert steps == list(range(1, 26))
    for _, m in tracker.metrics:
        assert {"train_loss", "learning_rate", "tokens_per_second", "mfu"} <= set(m)
        assert m["tokens_per_second"] > 0 and 0 < m["mfu"] < 1.5
    assert tracker.params["model_type"] == "bert" and tracker.params["train_examples"] > 0
    lines = [r.message for r in caplog.records if r.message.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/25", "10/25", "20/25", "25/25"]
    assert all("tokens/s" in line and "ETA" in line and "MFU" in line for line in lines)


def test_measuring_the_matmul_peak_leaves_the_random_state_alone():
    """The peak is measured once per process, after a resume has restored the RNG: drawing from the global RNG
    there would change every later dropout mask of a resumed run."""
    import torch

    from lmcore.hardware import matmul_peak_flops

    matmul_peak_flops.cache_clear()
    before = torch.get_rng_state()
    assert matmul_peak_flops("cpu", "float32") > 1e8
    assert torch.equal(before, torch.get_rng_state())
