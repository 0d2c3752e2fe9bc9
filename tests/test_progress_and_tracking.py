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


def test_model_flops_are_counted_from_the_kernels_the_model_runs(corpus, tmp_path):
    """FLOPs per token from PyTorch's counter over one real forward and backward: every matrix 6 times per token,
    the masked-LM vocabulary projection only at the masked share of positions."""
    import torch

    from lmcore import hardware
    from lmcore.data import collate
    from lmcore.objectives import to_device

    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=corpus["train"])
    model.train_model(corpus["train"], args={"max_steps": 1})
    features = model._features([__import__("pathlib").Path(corpus["train"])], model.block_size())
    prepared = model._objective().prepare(collate(features, [0], 0), lambda i: torch.Generator().manual_seed(i))
    before = torch.random.get_rng_state()
    per_token = hardware.measured_flops_per_token(model._training_module(), model._objective(),
                                                  to_device(prepared, "cpu"))
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(p.grad is None for p in model.model.parameters())
    encoder = sum(p.numel() for n, p in model.model.named_parameters() if p.dim() == 2 and "encoder" in n)
    head = model.model.config.vocab_size * model.model.config.hidden_size
    assert 6 * encoder < per_token < 6 * (encoder + head)  # the head at ~15% of positions, not all of them


def test_attention_kernel_follows_the_compute_dtype_and_the_cpu(corpus, tmp_path, monkeypatch):
    fp32 = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, mixed_precision="no"),
                                 train_files=corpus["train"])
    bf16 = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, mixed_precision="bf16"),
                                 train_files=corpus["train"])
    # In fp32 the rule depends on the CPU's vector width (bench/cpu_kernels.py): eager with AVX-512, SDPA with AVX2.
    from lmcore import hardware

    wide = hardware.cpu_vector_width().startswith("AVX512")
    assert (fp32.attention, bf16.attention) == ("eager" if wide else "sdpa", "eager")
    assert fp32.model.config._attn_implementation == fp32.attention
    assert bf16.model.config._attn_implementation == "eager"
    monkeypatch.setattr(hardware, "cpu_vector_width", lambda: "AVX2")
    narrow = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, mixed_precision="no"),
                                   train_files=corpus["train"])
    assert narrow.attention == "sdpa" == narrow.model.config._attn_implementation
