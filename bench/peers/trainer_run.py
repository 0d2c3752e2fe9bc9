"""The transformers Trainer baseline, as examples/pytorch/language-modeling/run_mlm.py and run_clm.py run it.

    python bench/peers/trainer_run.py --setup JSON --tokenizer DIR --corpus F --cache DIR --out DIR --steps N

The text file becomes a `datasets` Dataset ("text" builder), each line is tokenized (run_mlm: with special tokens
and their mask; run_clm: plain), the token stream is cut into blocks of 128 (group_texts), and Trainer trains with
DataCollatorForLanguageModeling (mlm=True with probability 0.15 for BERT, mlm=False for GPT-2) under the
TrainingArguments defaults: fp32, AdamW, no gradient accumulation, eager attention. Only max_steps, the batch size,
the learning rate, and "no saving / no reporting" are set; `--bf16` and `--compile` turn on the Trainer's own
`bf16=True` (CPU autocast through accelerate) and `torch_compile=True` (inductor, the whole model and its loss), the
settings a user who wants the Trainer at its fastest would choose. Prints one BENCH_RESULT line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from itertools import chain
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import BATCH, BLOCK, report  # noqa: E402


def grouped_dataset(tokenizer, corpus: str, cache: str, mlm: bool):
    from datasets import load_dataset

    raw = load_dataset("text", data_files={"train": corpus}, cache_dir=cache)["train"]

    def tokenize(examples):
        if mlm:
            return tokenizer(examples["text"], return_special_tokens_mask=True)
        return tokenizer(examples["text"])

    def group_texts(examples):
        joined = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(joined[next(iter(examples.keys()))]) // BLOCK * BLOCK
        return {k: [t[i:i + BLOCK] for i in range(0, total, BLOCK)] for k, t in joined.items()}

    tokenized = raw.map(tokenize, batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True)


def build_model(setup: dict, tokenizer):
    import transformers as hf

    if setup["mlm"]:
        config = hf.BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **setup["config"])
        return hf.AutoModelForMaskedLM.from_config(config, attn_implementation="eager")
    config = hf.GPT2Config(vocab_size=len(tokenizer), n_positions=1024, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, **setup["config"])
    return hf.AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("--setup", type=json.loads, required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    ns = p.parse_args()

    import transformers as hf

    hf.logging.set_verbosity_error()
    tokenizer = hf.AutoTokenizer.from_pretrained(ns.tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    mlm = ns.setup["mlm"]
    start = time.perf_counter()
    dataset = grouped_dataset(tokenizer, ns.corpus, ns.cache, mlm)
    prepared = time.perf_counter()
    if ns.steps == 0:  # data preparation only: tokenize + group_texts, the datasets cache is then warm
        report({"prepare_s": prepared - start, "bytes": Path(ns.corpus).stat().st_size, "examples": len(dataset)})
        return
    model = build_model(ns.setup, tokenizer)
    collator = hf.DataCollatorForLanguageModeling(tokenizer, mlm=mlm, mlm_probability=0.15)
    args = hf.TrainingArguments(output_dir=ns.out, per_device_train_batch_size=BATCH, max_steps=ns.steps,
                                learning_rate=ns.lr, warmup_steps=max(1, ns.steps // 10), save_strategy="no",
                                report_to="none",
                                logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=42, bf16=ns.bf16,
                                torch_compile=ns.compile)
    trainer = hf.Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                         processing_class=tokenizer)
    trained = trainer.train()
    done = time.perf_counter()
    report({"prepare_s": prepared - start, "train_s": done - prepared, "steps": trained.global_step,
            "final_loss": trained.training_loss, "examples": len(dataset),
            "params": sum(p.numel() for p in model.parameters())})


if __name__ == "__main__":
    main()
