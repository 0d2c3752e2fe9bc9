"""Sequence-classification fine-tuning, one measured job per process, for bench/classify_throughput.py.

    python bench/peers/classify_run.py --system lmcore --model DIR --data CSV --out DIR --steps N
    python bench/peers/classify_run.py --system lmcore-fp32 ...             # lmcore in full fp32
    python bench/peers/classify_run.py --system trainer ...                  # transformers' Trainer (needs accelerate)
    bench/.venv-st/bin/python bench/peers/classify_run.py --system simpletransformers ...

Every system fine-tunes the same saved model folder (a BERT and its tokenizer) on the same labelled CSV (`text`,
`labels` as integer ids, shuffled once by the bench): one epoch over its first steps x 32 rows (Simple
Transformers' ClassificationModel has no max_steps), batch 32, at most 128 tokens per example, no evaluation and
no checkpoints, each with its own defaults otherwise: lmcore's `ClassificationModel` (bf16 autocast where the CPU
has it), Simple Transformers' `ClassificationModel` (use_cuda=False: fp32), and the Trainer as its
text-classification example uses it (`AutoModelForSequenceClassification`, the texts tokenized with `map` and
truncation, `DataCollatorWithPadding`, fp32). Prints one BENCH_RESULT line: seconds inside the training call.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import BATCH, report  # noqa: E402

MAX_LENGTH = 128


def common_args(ns) -> dict:
    return {"max_seq_length": MAX_LENGTH, "train_batch_size": BATCH, "learning_rate": ns.lr,
            "num_train_epochs": 1, "save_steps": -1, "save_model_every_epoch": False, "output_dir": ns.out,
            "overwrite_output_dir": True, "evaluate_during_training": False, "logging_steps": 10_000,
            "silent": True, "reprocess_input_data": False, "cache_dir": ns.out + "-cache", "manual_seed": 42}


def run_lmcore(ns, frame, labels: int, fp32: bool) -> float:
    from lmcore import ClassificationModel

    args = common_args(ns)
    if fp32:
        args["mixed_precision"] = "no"
    model = ClassificationModel("bert", ns.model, num_labels=labels, args=args, use_cuda=False)
    start = time.perf_counter()
    model.train_model(frame)
    return time.perf_counter() - start


def run_simpletransformers(ns, frame, labels: int) -> float:
    from simpletransformers.classification import ClassificationModel

    # reprocess_input_data: its feature cache is named without the number of rows, so a cache from a shorter run
    # would silently train that run's rows again (seen: 24 "steps" in 0.8 s).
    args = {**common_args(ns), "reprocess_input_data": True, "use_multiprocessing": False,
            "use_multiprocessing_for_evaluation": False,
            "wandb_project": None, "fp16": False, "save_eval_checkpoints": False, "save_optimizer_and_scheduler":
            False, "no_save": True}
    args.pop("mixed_precision", None)
    model = ClassificationModel("bert", ns.model, num_labels=labels, args=args, use_cuda=False)
    start = time.perf_counter()
    model.train_model(frame)
    return time.perf_counter() - start


def run_trainer(ns, frame, labels: int) -> float:
    import datasets
    import transformers as hf

    hf.logging.set_verbosity_error()
    tokenizer = hf.AutoTokenizer.from_pretrained(ns.model)
    model = hf.AutoModelForSequenceClassification.from_pretrained(ns.model, num_labels=labels,
                                                                  attn_implementation="eager")
    data = datasets.Dataset.from_pandas(frame[["text", "labels"]].rename(columns={"labels": "label"}))
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True,
                    remove_columns=["text"])
    training = hf.TrainingArguments(output_dir=ns.out, per_device_train_batch_size=BATCH, learning_rate=ns.lr,
                                    num_train_epochs=1, save_strategy="no", report_to=[], logging_strategy="no",
                                    use_cpu=True, seed=42, disable_tqdm=True)
    trainer = hf.Trainer(model=model, args=training, train_dataset=data,
                         data_collator=hf.DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("--system", required=True, choices=["lmcore", "lmcore-fp32", "trainer", "simpletransformers"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=5e-5)
    ns = p.parse_args()
    import pandas as pd

    frame = pd.read_csv(ns.data)
    labels = int(frame["labels"].nunique())
    # Simple Transformers' ClassificationModel has no max_steps: every system gets one epoch of exactly
    # steps x batch rows (the CSV is shuffled once by the bench), so each runs `steps` optimizer steps.
    frame = frame.head(ns.steps * BATCH)
    if ns.system == "trainer":
        seconds = run_trainer(ns, frame, labels)
    elif ns.system == "simpletransformers":
        seconds = run_simpletransformers(ns, frame, labels)
    else:
        seconds = run_lmcore(ns, frame, labels, fp32=ns.system == "lmcore-fp32")
    report({"train_s": seconds, "steps": ns.steps, "examples": len(frame)})


if __name__ == "__main__":
    main()
