"""Simple Transformers 0.70.8, the system the seed documentation describes; runs in bench/.venv-st (transformers 4).

    bench/.venv-st/bin/python bench/peers/simpletransformers_run.py train --setup JSON --tokenizer DIR \
        --corpus F --cache DIR --out DIR --steps N
    bench/.venv-st/bin/python bench/peers/simpletransformers_run.py prepare --setup JSON --tokenizer DIR \
        --corpus F --cache DIR --out DIR

Its own defaults except: CPU (use_cuda=False, which also turns fp16 off), no wandb, no tensorboard files in the
repository, no checkpoints, the bench's tokenizer (tokenizer_name) and model size. `train` reuses the features a
`prepare` run cached (reprocess_input_data=False), so start-up is model building, not tokenizing.
Note: its max_steps stops after max_steps + 1 optimizer steps; both step counts of a pair carry that extra step,
so it cancels in the difference. Prints one BENCH_RESULT line.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import BATCH, BLOCK, report  # noqa: E402


def model_args(setup: dict, ns, vocab: int, reprocess: bool) -> dict:
    args = {"tokenizer_name": ns.tokenizer, "vocab_size": vocab, "max_seq_length": BLOCK, "block_size": BLOCK,
            "train_batch_size": BATCH, "learning_rate": ns.lr, "max_steps": ns.steps, "num_train_epochs": 1,
            "save_steps": -1, "save_model_every_epoch": False, "save_eval_checkpoints": False,
            "cache_dir": ns.cache, "output_dir": ns.out, "overwrite_output_dir": True,
            "reprocess_input_data": reprocess, "wandb_project": None, "silent": True, "logging_steps": 10_000,
            "tensorboard_dir": os.path.join(ns.out, "runs"), "manual_seed": 42, "mlm": setup["mlm"],
            "evaluate_during_training": False, "fp16": False}
    if setup["model_type"] == "electra":
        args["config"] = {**setup["config"], "vocab_size": vocab}
        args["discriminator_config"] = {**setup["config"], "vocab_size": vocab}
        args["generator_config"] = {**setup["generator_config"], "vocab_size": vocab}
    else:
        args["config"] = setup["config"]
    return args


def build(setup: dict, ns, reprocess: bool):
    from simpletransformers.language_modeling import LanguageModelingModel
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(ns.tokenizer))
    return LanguageModelingModel(setup["model_type"], None, args=model_args(setup, ns, vocab, reprocess),
                                 use_cuda=False)


def cmd_train(ns) -> dict:
    model = build(ns.setup, ns, reprocess=False)
    if ns.setup["model_type"] == "electra":
        # Its ELECTRA pair shares one embedding table, which safetensors refuses to save under transformers 4.57
        # ("shared tensors ... mismatching"): its final save would crash. Save it the pickle way instead.
        model.model.save_pretrained = functools.partial(model.model.save_pretrained, safe_serialization=False)
    start = time.perf_counter()
    step, _ = model.train_model(ns.corpus, output_dir=ns.out, show_running_loss=False, verbose=False)
    return {"train_s": time.perf_counter() - start, "steps": step,
            "params": sum(p.numel() for p in model.model.parameters())}


def cmd_prepare(ns) -> dict:
    """Simple Transformers' feature building for dataset_type "simple" (SimpleDataset: every line through the
    slow tokenizer in a process pool, then cut into blocks), forced to rebuild."""
    model = build(ns.setup, ns, reprocess=True)
    start = time.perf_counter()
    dataset = model.load_and_cache_examples(ns.corpus, verbose=False, silent=True)
    seconds = time.perf_counter() - start
    return {"prepare_s": seconds, "bytes": Path(ns.corpus).stat().st_size, "examples": len(dataset),
            "tokens": sum(len(e) for e in dataset.examples)}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("job", choices=["train", "prepare"])
    p.add_argument("--setup", type=json.loads, required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=1e-3)
    ns = p.parse_args()
    report(cmd_train(ns) if ns.job == "train" else cmd_prepare(ns))


if __name__ == "__main__":
    main()
