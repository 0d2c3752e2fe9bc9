"""lmcore's side of the bench, one measured job per process.

    python bench/peers/lmcore_run.py tokenizer --setup JSON --corpus F --out DIR --cache DIR
    python bench/peers/lmcore_run.py train --setup JSON --tokenizer DIR --corpus F --cache DIR --out DIR --steps N
    python bench/peers/lmcore_run.py prepare --tokenizer DIR --corpus F --cache DIR [--reprocess]
    python bench/peers/lmcore_run.py eval --setup JSON --tokenizer DIR --corpus F --cache DIR --out DIR
    python bench/peers/lmcore_run.py padding --tokenizer DIR --corpus F --cache DIR
    python bench/peers/lmcore_run.py flops --setup JSON --tokenizer DIR --corpus F --cache DIR

Everything goes through the engine's public front door (LanguageModelingModel) except `prepare` and `padding`,
which call the feature cache (lmcore.data.features) directly to time it alone. Each job prints one BENCH_RESULT line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import BATCH, BLOCK, VOCAB, report  # noqa: E402


def model_args(setup: dict, ns) -> dict:
    block, batch = getattr(ns, "block", None) or BLOCK, getattr(ns, "batch", None) or BATCH
    args = {"vocab_size": VOCAB, "max_seq_length": block, "train_batch_size": batch, "eval_batch_size": batch,
            "cache_dir": ns.cache, "reprocess_input_data": False, "output_dir": ns.out or str(Path(ns.cache) / "out"),
            "overwrite_output_dir": True, "save_steps": -1, "save_model_every_epoch": False,
            "logging_steps": 10_000, "mlm": setup["mlm"], "learning_rate": ns.lr, "warmup_ratio": 0.1}
    if setup["model_type"] == "electra":
        args["discriminator_config"] = setup["config"]
        args["generator_config"] = setup["generator_config"]
    else:
        args["config"] = setup["config"]
    if getattr(ns, "tokenizer", None):
        args["tokenizer_name"] = ns.tokenizer
    if ns.steps:
        args["max_steps"] = ns.steps
    if getattr(ns, "mixed_precision", None):
        args["mixed_precision"] = ns.mixed_precision
    if getattr(ns, "compile", False):
        args["compile"] = True
    if getattr(ns, "seed", None) is not None:
        args["manual_seed"] = ns.seed
    return args


def build(setup: dict, ns, train_files=None):
    from lmcore import LanguageModelingModel

    return LanguageModelingModel(setup["model_type"], None, args=model_args(setup, ns), train_files=train_files,
                                 use_cuda=getattr(ns, "device", "cpu") == "cuda")


def cmd_tokenizer(ns) -> dict:
    """Train lmcore's tokenizer once and save it where the other systems load it. Transformers 4 slow
    tokenizers need the bare vocabulary files too (vocab.txt, or vocab.json + merges.txt): the tokenizer
    model writes them itself."""
    start = time.perf_counter()
    lm = build(ns.setup, ns, train_files=[ns.corpus])
    out = Path(ns.out)
    lm.tokenizer.save_pretrained(str(out))
    lm.tokenizer.backend_tokenizer.model.save(str(out))
    return {"seconds": time.perf_counter() - start, "vocab": len(lm.tokenizer)}


def cmd_train(ns) -> dict:
    if getattr(ns, "torch_dropout", False):  # bench/cpu_dropout.py's reference: torch's own bernoulli_ masks
        import contextlib

        from lmcore.training import hardware

        hardware.cpu_dropout = lambda device: contextlib.nullcontext()
    if getattr(ns, "attention", None):  # an A/B of the engine's attention choice (bench/cpu_kernels.py --engine)
        from lmcore.training import hardware

        hardware.choose_attention = lambda model, precision: hardware.set_attention(model, ns.attention)
    lm = build(ns.setup, ns)
    start = time.perf_counter()
    step, _ = lm.train_model(ns.corpus, output_dir=ns.out)
    details = lm.training_details
    result = {"train_s": time.perf_counter() - start, "steps": step, "tokens_seen": details["tokens_seen"],
              "final_loss": details["train_loss"][-1] if details["train_loss"] else None,
              "params": sum(p.numel() for p in lm.model.parameters()), "compiled": details["compiled"],
              "compile_warmup_s": details["compile_warmup_s"]}
    if ns.eval_file:
        result.update(_eval(lm, ns.eval_file))
    return result


def _eval(lm, eval_file: str) -> dict:
    out = lm.eval_model(eval_file, output_dir=lm.args.output_dir, verbose=False)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def cmd_eval(ns) -> dict:
    """Evaluation tokens/s: the features are built by a first call, then the best of three timed calls (cache
    hit; best of, as training takes the best of its rounds: this machine is shared and noisy)."""
    from lmcore.data.features import load_features
    from lmcore.data.tokenizer import load_tokenizer

    lm = build(ns.setup, ns)
    _eval(lm, ns.corpus)
    tok = load_tokenizer(ns.tokenizer)
    features = load_features([Path(ns.corpus)], tok, "simple", BLOCK, ns.cache)
    seconds = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        result = _eval(lm, ns.corpus)
        seconds = min(seconds, time.perf_counter() - start)
    return {"eval_s": seconds, "tokens": features.num_tokens, "tokens_per_s": features.num_tokens / seconds,
            **result}


def cmd_flops(ns) -> dict:
    """FLOPs one training step of lmcore executes per position (torch's FLOP counter over a forward and backward
    pass of the training module, as the engine's progress lines count them): the vocabulary projection only at
    the positions the objective scores."""
    import torch

    from lmcore.training.hardware import measured_flops_per_position

    lm = build(ns.setup, ns)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(lm.tokenizer), (1, ns.block or BLOCK), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "index": torch.tensor([0])}
    prepared = lm._objective().prepare(batch, lambda i: torch.Generator().manual_seed(int(i)))
    prepared = {k: v.to(lm.device) if isinstance(v, torch.Tensor) else v for k, v in prepared.items()}
    return {"flops_per_position": measured_flops_per_position(lm._training_module(), lm._objective(), prepared)}


def cmd_prepare(ns) -> dict:
    """Corpus -> features through the cache, as train_model does it: tokenizer load + content hash + build (or
    cache hit). `reprocess` forces the build."""
    start = time.perf_counter()
    from lmcore.data.features import load_features
    from lmcore.data.tokenizer import load_tokenizer

    imported = time.perf_counter()
    tok = load_tokenizer(ns.tokenizer)
    features = load_features([Path(ns.corpus)], tok, ns.dataset_type, BLOCK, ns.cache, reprocess=ns.reprocess)
    end = time.perf_counter()
    return {"prepare_s": end - imported, "import_s": imported - start, "bytes": Path(ns.corpus).stat().st_size,
            "tokens": features.num_tokens, "examples": len(features)}


def cmd_padding(ns) -> dict:
    """Share of padding tokens in line_by_line batches: lmcore's length-grouped batches against plain dynamic
    padding of shuffled batches (what a DataCollatorWithPadding over a shuffled DataLoader does)."""
    import numpy as np

    from lmcore.data.batches import collate, epoch_batches
    from lmcore.data.features import load_features
    from lmcore.data.tokenizer import load_tokenizer, padding_id

    tok = load_tokenizer(ns.tokenizer)
    features = load_features([Path(ns.corpus)], tok, "line_by_line", BLOCK, ns.cache)
    pad = padding_id(tok)

    def fraction(batches) -> float:
        real = total = 0
        for b in batches:
            mask = collate(features, b, pad)["attention_mask"]
            real += int(mask.sum())
            total += mask.numel()
        return 1 - real / total

    grouped = epoch_batches(features, BATCH, 42, 0, group_by_length=True)
    order = np.random.default_rng(42).permutation(len(features))
    plain = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    return {"examples": len(features), "lmcore_padding": fraction(grouped), "dynamic_padding": fraction(plain)}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("job", choices=["tokenizer", "train", "prepare", "eval", "padding", "flops"])
    p.add_argument("--setup", type=json.loads, default=None)
    p.add_argument("--tokenizer")
    p.add_argument("--corpus", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--out")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mixed-precision")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--torch-dropout", action="store_true", help="torch's dropout masks instead of the engine's")
    p.add_argument("--attention", choices=["sdpa", "eager"], default=None,
                   help="the attention kernel, whatever the engine's rule would choose")
    p.add_argument("--block", type=int, default=None, help="block length (default: the bench's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=None, help="examples per step and rank (default: the bench's)")
    p.add_argument("--eval-file")
    p.add_argument("--reprocess", action="store_true")
    p.add_argument("--dataset-type", default="simple")
    ns = p.parse_args()
    jobs = {"tokenizer": cmd_tokenizer, "train": cmd_train, "prepare": cmd_prepare, "eval": cmd_eval,
            "padding": cmd_padding, "flops": cmd_flops}
    report(jobs[ns.job](ns))


if __name__ == "__main__":
    main()
