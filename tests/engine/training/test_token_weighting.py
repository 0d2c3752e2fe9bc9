"""Every token counts once: one step of 32 examples gives the same gradients as 4 accumulated micro-batches of 8
and as 2 processes of 16 (masked LM, causal LM, ELECTRA), and the training loop waits on the host only when it
logs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmcore import LanguageModelingModel
from lmcore.training import hardware, train
from lmcore import model as model_module
from tests.conftest import ROOT, sample_lines, tiny_args
from tests.engine.objectives.test_electra import electra_args

NO_DROPOUT = {"bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
              "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
              "electra": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}


def settings(model_type, where: Path, batch: int, accumulate: int) -> dict:
    common = dict(max_steps=1, train_batch_size=batch, gradient_accumulation_steps=accumulate, learning_rate=1e-4,
                  dataset_type="line_by_line", max_grad_norm=1e9, mixed_precision="no", save_steps=-1,
                  save_model_every_epoch=False, cache_dir=str(where.parent / "cache"), logging_steps=1)
    if model_type == "electra":
        disc = {"embedding_size": 32, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 64, **NO_DROPOUT["electra"]}
        gen = {**disc, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
        return electra_args(where, discriminator_config=disc, generator_config=gen, **common)
    args = tiny_args(model_type, where, **common)
    args["config"].update(NO_DROPOUT[model_type])
    return args


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """Lines of very different lengths, so micro-batches score very different numbers of tokens."""
    f = tmp_path_factory.mktemp("lines") / "train.txt"
    f.write_text("\n".join(sample_lines("train.txt", 400)) + "\n")
    return f


def run(model_type, where: Path, lines: Path, batch: int, accumulate: int, processes: int = 1) -> dict:
    where.mkdir(parents=True)
    spec = {"model_type": model_type, "args": settings(model_type, where, batch, accumulate),
            "train_files": [str(lines)], "out": str(where / "grads.pt")}
    (where / "spec.json").write_text(json.dumps(spec))
    if processes == 1:
        cmd = [sys.executable, str(ROOT / "tests" / "grad_script.py"), str(where / "spec.json")]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(ROOT / "tests" / "grad_script.py"), str(where / "spec.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=where,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(where / "grads.pt")


def assert_same(a: dict, b: dict) -> None:
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["grads"].keys() == b["grads"].keys()
    for name in a["grads"]:
        torch.testing.assert_close(a["grads"][name], b["grads"][name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("model_type", ["bert", pytest.param("gpt2", marks=pytest.mark.slow),
                                        pytest.param("electra", marks=pytest.mark.slow)])
def test_accumulating_micro_batches_gives_the_gradient_of_one_big_batch(model_type, tmp_path, lines):
    one = run(model_type, tmp_path / "1x32", lines, 32, 1)
    four = run(model_type, tmp_path / "4x8", lines, 8, 4)
    assert_same(one, four)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["bert", "gpt2", "electra"])
def test_two_processes_give_the_gradient_of_one_big_batch(model_type, tmp_path, lines):
    one = run(model_type, tmp_path / "1x32", lines, 32, 1)
    two = run(model_type, tmp_path / "2x16", lines, 16, 1, processes=2)
    assert_same(one, two)


def test_the_training_loop_waits_on_the_host_only_when_it_logs(tmp_path, lines, monkeypatch):
    args = tiny_args("bert", tmp_path, max_steps=20, logging_steps=5, save_steps=-1, mixed_precision="no")
    model = LanguageModelingModel("bert", None, args=args, train_files=str(lines))
    hardware.matmul_peak_flops("cpu", "float32")  # measured once per process, before training
    syncs, flushes, inside = [], [], [False]
    flush = train._Window.flush

    def counted_flush(self, state):
        inside[0] = True
        try:
            flushes.append(state.step)
            return flush(self, state)
        finally:
            inside[0] = False

    def spy(name, real):
        def call(*a, **kw):
            if not inside[0]:
                syncs.append(name)
            return real(*a, **kw)
        return call

    monkeypatch.setattr(train._Window, "flush", counted_flush)
    monkeypatch.setattr(torch.Tensor, "item", spy("item", torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "tolist", spy("tolist", torch.Tensor.tolist))
    monkeypatch.setattr(torch.distributed, "all_reduce", spy("all_reduce", torch.distributed.all_reduce))
    monkeypatch.setattr(model_module, "fit", spy("fit-start", train.fit))  # a marker: nothing before counts
    model.train_model(str(lines))
    during_fit = syncs[syncs.index("fit-start") + 1:]
    assert during_fit == [] and flushes == [1, 5, 10, 15, 20]
    assert len(model.training_details["train_loss"]) == 20


def test_a_non_finite_step_inside_a_logging_window_is_skipped_and_named(tmp_path, lines, monkeypatch):
    """Step 3 of 10 produces a NaN loss: nothing is stepped with it (fused AdamW skips it on the device), the
    next sync point (the checkpoint due at step 4) stops training naming step 3, and no later checkpoint exists."""
    from lmcore import NonFiniteLossError
    from lmcore.objectives.language import LanguageModelObjective

    args = tiny_args("bert", tmp_path, max_steps=10, logging_steps=10, save_steps=2, mixed_precision="no")
    model = LanguageModelingModel("bert", None, args=args, train_files=str(lines))
    real, calls, seen = LanguageModelObjective.loss_sums, [0], {}

    def poisoned(self, module, prepared):
        sums = real(self, module, prepared)
        if prepared["input_ids"].shape[0] == 1:  # the one-example pass that counts the model's FLOPs
            return sums
        calls[0] += 1
        if calls[0] == 3:  # the third step (one micro-batch per step)
            seen["before"] = {n: p.detach().clone() for n, p in model.model.named_parameters()}
            return {k: v * float("nan") for k, v in sums.items()}
        if calls[0] == 4:  # the weights step 4 starts from are those step 3 started from
            seen["after"] = {n: p.detach().clone() for n, p in model.model.named_parameters()}
        return sums

    monkeypatch.setattr(LanguageModelObjective, "loss_sums", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the training loss is nan.*stopped at step 4"):
        model.train_model(str(lines))
    assert all(torch.equal(seen["before"][n], seen["after"][n]) for n in seen["before"])
    out = Path(args["output_dir"])
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()


def test_a_batch_is_cut_into_chunks_of_similar_length_only_where_that_saves_padding():
    import numpy as np

    from lmcore.data.batches import split_by_length

    lengths = np.array([20] * 31 + [128])  # review snippets and one plot summary
    chunks = split_by_length(lengths, range(32))
    assert sorted(i for c in chunks for i in c) == list(range(32))
    padded = sum(len(c) * max(lengths[c]) for c in chunks)
    assert len(chunks) == 2 and padded == 31 * 20 + 128 < 32 * 128
    assert split_by_length(np.full(32, 64), range(32)) == [list(range(32))]  # blocks of `simple`: one chunk
    assert len(split_by_length(lengths, range(32), most=1)) == 1


def test_cutting_a_step_by_length_leaves_its_gradient_as_it_was(tmp_path, monkeypatch):
    """One step on texts of very different lengths, cut into chunks or padded whole: the same weights after it
    (every example weighs the same in the step's loss however the step is cut)."""
    import pandas as pd

    from lmcore import ClassificationModel
    from lmcore.data import batches

    texts = [" ".join(sample_lines("train.txt", 40)[i].split()[:4]) for i in range(30)]
    texts += [" ".join(" ".join(sample_lines("train.txt", 60)[40:]).split()[:60])] * 2
    frame = pd.DataFrame({"text": texts, "labels": [i % 2 for i in range(32)]})
    lm = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, max_steps=1),
                               train_files=str(_write(tmp_path, sample_lines("train.txt", 400))))
    lm.train_model(str(tmp_path / "lines.txt"))
    after = {}
    for name, split in (("cut", batches.split_by_length), ("whole", lambda lengths, idx, most=4: [list(idx)])):
        monkeypatch.setattr(train, "split_by_length", split)
        args = {"max_steps": 1, "train_batch_size": 32, "learning_rate": 1e-2, "warmup_ratio": 0.0, "mixed_precision": "no",
                "output_dir": str(tmp_path / name), "config": {"hidden_dropout_prob": 0.0,
                                                              "attention_probs_dropout_prob": 0.0}}
        model = ClassificationModel("bert", str(tmp_path / "out-bert"), num_labels=2, args=args, use_cuda=False)
        calls: list = []
        monkeypatch.setattr(train, "collate", lambda *a, _c=batches.collate, _calls=calls, **k:
                            _calls.append(len(a[1])) or _c(*a, **k))
        grads: list = []  # the step's gradients, as the optimizer gets them (AdamW's first step is ~sign(g))

        def clip(params, limit, _grads=grads, _clip=torch.nn.utils.clip_grad_norm_):
            params = list(params)
            _grads.extend(p.grad.clone() for p in params)
            return _clip(params, limit)

        monkeypatch.setattr(train.torch.nn.utils, "clip_grad_norm_", clip)
        model.train_model(frame)
        monkeypatch.undo()
        after[name] = (grads, calls, model.training_details["train_loss"])
    assert len(after["cut"][1]) > 1 and sum(after["cut"][1]) == 32 and after["whole"][1] == [32]
    assert after["cut"][2] == pytest.approx(after["whole"][2], rel=1e-5)
    assert sum(float(g.abs().sum()) for g in after["whole"][0]) > 0
    for cut, whole in zip(*(after[k][0] for k in ("cut", "whole")), strict=True):
        torch.testing.assert_close(cut, whole, rtol=1e-4, atol=1e-7)


def _write(tmp_path, lines):
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


class _DeviceReads(TorchDispatchMode):
    """Counts the operations that make the host wait for a device: reading a value back (`.item()`, `bool()`, a
    count for a boolean-mask index) and indexing with a boolean mask."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name in ("index", "index_put", "index_put_") and len(args) > 1 else ()
        if name in ("_local_scalar_dense", "nonzero", "is_nonzero", "masked_select") or \
                any(getattr(i, "dtype", None) == torch.bool for i in indices or ()):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "electra"])
def test_a_training_step_without_padding_reads_nothing_back_from_the_device(model_type, tmp_path, lines):
    """The host works out before the step what the step would otherwise read back from the device (each read a
    stall on a GPU): the scored positions as indices, and that no position is padding (so transformers is given
    no mask to check). The forward and backward then read nothing, and give exactly the loss and gradients of the
    boolean-mask path."""
    model = LanguageModelingModel(model_type, None, args=settings(model_type, tmp_path / "m", 4, 1),
                                  train_files=str(lines))
    module, objective = model._training_module(), model._objective()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(model.tokenizer), (4, 32), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "index": torch.arange(4)}
    prepared = objective.prepare(batch, lambda i: torch.Generator().manual_seed(int(i)))
    assert prepared["padded"] is False and any(k.endswith("_index") for k in prepared)

    def step(p: dict) -> tuple[torch.Tensor, dict]:
        module.zero_grad(set_to_none=True)
        sums = objective.loss_sums(module, p)
        loss = sum(v.float() for v in sums.values())
        loss.backward()
        return loss.detach(), {n: w.grad.clone() for n, w in module.named_parameters() if w.grad is not None}

    with _DeviceReads() as reads:
        loss, grads = step(prepared)
    assert reads.seen == []
    boolean = {k: v for k, v in prepared.items() if k != "padded" and not k.endswith("_index")}
    with _DeviceReads() as reads:
        loss_b, grads_b = step(boolean)
    assert reads.seen  # the boolean-mask path does read back: the check above can fail
    assert torch.equal(loss, loss_b) and grads.keys() == grads_b.keys()
    for name in grads:
        assert torch.equal(grads[name], grads_b[name]), name
