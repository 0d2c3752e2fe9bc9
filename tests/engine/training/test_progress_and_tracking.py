"""What a user sees while training: progress lines with rate and ETA, and per-step metrics on the tracker."""

import logging

import pytest

from lmcore import LanguageModelingModel
from lmcore.training.tracking import ListTracker
from tests.conftest import tiny_args


def _line_figures(line: str) -> dict:
    """The numbers of a progress line: step, loss, tokens/s, HFU %."""
    import re

    m = re.search(r"step (\d+)/\d+ .*\| loss ([\d.]+) \((?:mean of steps (\d+)-(\d+)|step (\d+))\) .*\| "
                  r"([\d,]+) tokens/s \| HFU (\d+)% of \w+ peak", line)
    assert m, line
    first, last = (int(m[3]), int(m[4])) if m[3] else (int(m[5]), int(m[5]))
    return {"step": int(m[1]), "loss": float(m[2]), "first": first, "last": last,
            "tokens_per_second": float(m[6].replace(",", "")), "hfu": int(m[7])}


def test_progress_lines_show_the_window_they_report_and_the_tracker_records_the_same(corpus, tmp_path, caplog):
    """Each line's loss is the mean of the per-step losses since the previous line (never an older value
    repeated), and its tokens/s and utilisation are the figures the tracker records at that step."""
    tracker = ListTracker()
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, max_steps=25, logging_steps=10),
                                  train_files=corpus["train"], tracker=tracker)
    with caplog.at_level(logging.INFO, logger="lmcore"):
        model.train_model(corpus["train"])
    per_step = {s: m["train_loss"] for s, m in tracker.metrics if "train_loss" in m}
    assert sorted(per_step) == list(range(1, 26))
    assert all({"learning_rate"} <= set(m) for s, m in tracker.metrics if "train_loss" in m)
    rates = {s: m for s, m in tracker.metrics if "tokens_per_second" in m}
    assert sorted(rates) == [1, 10, 20, 25]  # one figure per line, at the line's step
    assert tracker.params["model_type"] == "bert" and tracker.params["train_examples"] > 0
    lines = [_line_figures(r.message) for r in caplog.records if r.message.startswith("step ")]
    assert [f["step"] for f in lines] == [1, 10, 20, 25]
    assert [(f["first"], f["last"]) for f in lines] == [(1, 1), (2, 10), (11, 20), (21, 25)]
    for f in lines:
        window = [per_step[s] for s in range(f["first"], f["last"] + 1)]
        assert f["loss"] == pytest.approx(sum(window) / len(window), abs=6e-5)
        assert f["tokens_per_second"] == pytest.approx(rates[f["step"]]["tokens_per_second"], rel=1e-3, abs=1)
        assert f["hfu"] == round(100 * rates[f["step"]]["hfu"]) and 0 < rates[f["step"]]["hfu"] <= 1
    assert len({f["loss"] for f in lines}) == len(lines)  # a falling curve: no two windows show the same loss


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_window_rate_counts_its_training_time_only_and_utilisation_uses_the_known_peak(monkeypatch):
    """A window with known work: 10 steps of 1,000 tokens (2,048 computed positions each, padding included) in
    2 s of training, with a 5 s checkpoint in the middle, on a machine whose peak is 1 TFLOP/s."""
    from lmcore.training import hardware, progress as progress_module
    from lmcore.training.precision import Precision

    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    monkeypatch.setattr(hardware, "matmul_peak_flops", lambda *a: 1e12)
    progress = progress_module.TrainingProgress(total=100, start_step=0, precision=Precision("cpu"))
    progress.flops_per_position = 2e6
    for step in range(10):
        clock.now += 0.2
        progress.tick(1000, 2048)
        if step == 4:
            with progress.paused():
                clock.now += 5.0
    figures = progress.window_figures()
    assert figures["tokens_per_second"] == pytest.approx(10 * 1000 / 2.0)
    assert figures["hfu"] == pytest.approx(10 * 2048 * 2e6 / 2.0 / 1e12)
    clock.now += 1.0  # the next window starts where this one was reported
    progress.tick(500, 1024)
    assert progress.window_figures()["tokens_per_second"] == pytest.approx(500.0)


def test_utilisation_over_100_percent_remeasures_a_peak_taken_on_busy_cores(monkeypatch, caplog):
    import torch

    from lmcore.training import hardware, progress as progress_module
    from lmcore.training.precision import Precision

    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    peaks = iter([1e9, 1e12])  # first measured while another job held the cores, then on quiet ones
    fake = lambda *a: next(peaks)  # noqa: E731
    fake.cache_clear = lambda: None
    monkeypatch.setattr(hardware, "matmul_peak_flops", fake)
    progress = progress_module.TrainingProgress(total=10, start_step=0, precision=Precision("cpu", torch.bfloat16))
    progress.flops_per_position = 1e6
    clock.now += 1.0
    progress.tick(1000, 1000)  # 1e9 FLOPs in 1 s: 100% of the busy peak... and a bit more
    progress.tick(1000, 1000)
    with caplog.at_level(logging.INFO, logger="lmcore"):
        figures = progress.window_figures()
    assert figures["hfu"] == pytest.approx(2e9 / 1e12)
    assert "re-measured" in caplog.text


def test_measuring_the_matmul_peak_leaves_the_random_state_alone():
    """The peak is measured once per process, after a resume has restored the RNG: drawing from the global RNG
    there would change every later dropout mask of a resumed run."""
    import torch

    from lmcore.training.hardware import matmul_peak_flops

    matmul_peak_flops.cache_clear()
    before = torch.get_rng_state()
    assert matmul_peak_flops("cpu", "float32") > 1e8
    assert torch.equal(before, torch.get_rng_state())


def test_model_flops_are_counted_from_the_kernels_the_model_runs(corpus, tmp_path):
    """FLOPs per token from PyTorch's counter over one real forward and backward: every matrix 6 times per token,
    the masked-LM vocabulary projection only at the masked share of positions."""
    import torch

    from lmcore.training import hardware
    from lmcore.data.batches import collate
    from lmcore.base.host import to_device

    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path), train_files=corpus["train"])
    model.train_model(corpus["train"], args={"max_steps": 1})
    features = model._features([__import__("pathlib").Path(corpus["train"])], model.block_size())
    prepared = model._objective().prepare(collate(features, [0], 0), lambda i: torch.Generator().manual_seed(i))
    before = torch.random.get_rng_state()
    per_position = hardware.measured_flops_per_position(model._training_module(), model._objective(),
                                                        to_device(prepared, "cpu"))
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(p.grad is None for p in model.model.parameters())
    encoder = sum(p.numel() for n, p in model.model.named_parameters() if p.dim() == 2 and "encoder" in n)
    head = model.model.config.vocab_size * model.model.config.hidden_size
    assert prepared["input_ids"].shape[1] == int(prepared["attention_mask"][0].sum())  # a full block: no padding
    assert 6 * encoder < per_position < 6 * (encoder + head)  # the head at ~15% of positions, not all of them


def test_causal_flops_count_the_whole_vocabulary_head(corpus, tmp_path):
    """GPT-2 projects every position but the last onto the vocabulary, forward and backward (the chunked loss
    computes its gradients in its forward pass, the weight's accumulated in place): the count must equal
    transformers' own model over the same block, less the last position's head, or HFU reads low."""
    from pathlib import Path

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lmcore.data.batches import collate
    from lmcore.training import hardware

    model = LanguageModelingModel("gpt2", None, args=tiny_args("gpt2", tmp_path), train_files=corpus["train"])
    features = model._features([Path(corpus["train"])], model.block_size())
    prepared = model._objective().prepare(collate(features, [0], 0), lambda i: torch.Generator().manual_seed(i))
    ids = prepared["input_ids"][:1]
    assert int(prepared["attention_mask"][0].sum()) == ids.shape[1]  # a full block: no padding
    ours = hardware.measured_flops_per_position(model._training_module(), model._objective(), prepared)
    with FlopCounterMode(display=False) as counter:
        model.model(input_ids=ids, labels=ids).loss.backward()
    model.model.zero_grad(set_to_none=True)
    config = model.model.config
    last_head = 6 * config.n_embd * config.vocab_size / ids.shape[1]
    theirs = counter.get_total_flops() / ids.shape[1]
    assert abs(ours - (theirs - last_head)) < 0.01 * theirs, (ours, theirs, last_head)


def test_attention_kernel_is_eager_on_the_cpu_in_every_dtype(corpus, tmp_path):
    """The engine's rule (bench/cpu_kernels.py --engine): eager attention on the CPU, fp32 and bf16 alike, on every
    submodel; SDPA would draw its dropout masks with torch's bernoulli_ instead of the engine's."""
    models = [LanguageModelingModel(kind, None, args=tiny_args(kind, tmp_path, mixed_precision=precision),
                                    train_files=corpus["train"])
              for kind, precision in (("bert", "no"), ("bert", "bf16"), ("gpt2", "no"))]
    for model in models:
        assert model.attention == "eager" == model.model.config._attn_implementation
    from tests.engine.objectives.test_electra import electra_args

    electra = LanguageModelingModel("electra", None, args=electra_args(tmp_path, mixed_precision="no"),
                                    train_files=corpus["train"])
    kernels = {m.config._attn_implementation for m in electra.model.modules()
               if hasattr(m, "config") and hasattr(m, "set_attn_implementation")}
    assert electra.attention == "eager" and kernels == {"eager"}


SCRIPT = """
import logging, sys
from lmcore import LanguageModelingModel
{configure}
args = {args!r}
model = LanguageModelingModel("bert", None, args=args, train_files={train!r})
model.train_model({train!r})
"""


@pytest.mark.parametrize("configure, silent, shown", [
    ("", False, 1),                                            # a plain script: the engine's lines, once
    ("logging.basicConfig(level=logging.INFO)", False, 1),     # the seed pages' set-up: still once, theirs
    ("", True, 0),                                             # silent=True: quiet
])
def test_a_script_that_configures_no_logging_still_shows_progress(corpus, tmp_path, configure, silent, shown):
    """Simple Transformers users see progress without configuring anything; lmcore speaks through logging,
    which shows nothing below WARNING unless the engine makes its lines visible itself."""
    import subprocess
    import sys

    args = tiny_args("bert", tmp_path, max_steps=12, logging_steps=5, silent=silent, save_steps=6)
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT.format(configure=configure, args=args, train=corpus["train"]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    step_lines = [line for line in out.splitlines() if "step 10/12" in line]
    assert len(step_lines) == shown, out[-3000:]
    assert "Writing model shards" not in out
    if shown:
        assert "ETA" in step_lines[0] and "tokens/s" in step_lines[0]
        saved = next(line for line in out.splitlines() if "Saved the trained model" in line)
        assert "checkpoint-6 (" in saved and "checkpoint-12 (" in saved and "optimizer state" in saved


def test_loading_an_encoder_for_a_task_says_so_in_one_line_not_a_table(tmp_path, capfd, caplog):
    """transformers 5 prints a table of every missing and unexpected weight on each load; a downstream stage
    loads one model per seed and learning rate. The engine's own line says what the load means."""
    import transformers as hf

    from lmcore import ClassificationModel

    tok_dir = tmp_path / "mlm"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "warm", "cold", "day", "night", "a"]
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    hf.BertTokenizerFast(vocab_file=str(tok_dir / "vocab.txt")).save_pretrained(str(tok_dir))
    config = hf.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32)
    hf.BertForMaskedLM(config).save_pretrained(str(tok_dir))
    with caplog.at_level(logging.INFO, logger="lmcore"):
        ClassificationModel("bert", str(tok_dir), num_labels=2, args={"output_dir": str(tmp_path / "out")},
                            use_cuda=False)
    captured = capfd.readouterr()
    shown = captured.err + captured.out
    assert "LOAD REPORT" not in shown and "Loading weights" not in shown and "not sharded" not in shown
    assert "encoder loaded" in caplog.text and "fresh" in caplog.text
