"""`LanguageModelingArgs`: every setting of a language-modeling run, in one dataclass.

Field names follow the Simple Transformers documentation so that user code written for it runs here. Each field
carries a docstring (the string under it). Unknown names are rejected at once, with the nearest valid name, whether
they arrive as attributes (`args.num_train_epoch = 1`) or as dict keys (`args={"num_train_epoch": 1}`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any

DATASET_TYPES = ("simple", "line_by_line", "text")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


class ArgsError(ValueError):
    """Bad settings: the message lists every problem found, one per line."""


@dataclass
class LanguageModelingArgs:
    # ---- data -------------------------------------------------------------------------------------------------
    dataset_type: str = "simple"
    """How the corpus becomes examples: "simple" concatenates every line and cuts the token stream into blocks of
    `block_size` (no padding); "line_by_line" makes each non-empty line one example (dynamic padding, lines of
    similar length batched together); "text" treats each file as one document cut into blocks."""
    block_size: int = -1
    """Tokens per example, special tokens included. -1: `max_seq_length`, capped by the model's positions."""
    max_seq_length: int = 128
    """Longest example in tokens; the block size when `block_size` is -1. Longer lines are cut."""
    reprocess_input_data: bool = True
    """Rebuild the tokenized features even when a cache for this exact corpus, tokenizer and settings exists.
    The cache is keyed by content, so it can never be stale: False is always safe and much faster."""
    cache_dir: str = "cache_dir/"
    """Where tokenized features are cached (memory-mapped token files keyed by content hash)."""
    strict_utf8: bool = False
    """Invalid UTF-8 in a corpus file is an error naming the file and byte offset (True), or is replaced and
    counted with a warning (False)."""

    # ---- tokenizer (training from scratch) --------------------------------------------------------------------
    vocab_size: int | None = None
    """Vocabulary size of the tokenizer trained when `model_name` is None (default 30000 then)."""
    min_frequency: int = 2
    """A token must occur this often in the corpus to enter a trained vocabulary."""
    special_tokens: list[str] | None = None
    """Special tokens of a trained tokenizer. None: the model type's own ([CLS] [SEP] ... for BERT, <s> </s> ...
    for RoBERTa). A list replaces them, in the order the model type uses."""
    tokenizer_name: str | None = None
    """A saved tokenizer (directory) to use instead of the model's own, or instead of training one."""
    do_lower_case: bool = False
    """Lower-case the text. A trained vocabulary follows this too, so a cased vocabulary never sees lower-cased
    input and an uncased one never sees capitals."""

    # ---- model ------------------------------------------------------------------------------------------------
    config: dict = field(default_factory=dict)
    """Architecture overrides (the model type's config fields, e.g. {"num_hidden_layers": 4}) when training from
    scratch, or config fields to change when fine-tuning (dropout, say)."""
    config_name: str | None = None
    """A saved config (directory) to build the model from instead of the model type's defaults."""
    mlm: bool = True
    """Masked language modeling (BERT-style). False: causal language modeling (GPT-style), required for gpt2 and
    openai-gpt."""
    mlm_probability: float = 0.15
    """Share of tokens selected for masking (80% become the mask token, 10% a random token, 10% unchanged)."""

    # ---- ELECTRA ----------------------------------------------------------------------------------------------
    generator_config: dict = field(default_factory=dict)
    """ElectraConfig fields of the generator when training ELECTRA from scratch. Unspecified fields take the
    defaults; a generator left empty is a quarter of the discriminator's width, as in the ELECTRA paper."""
    discriminator_config: dict = field(default_factory=dict)
    """ElectraConfig fields of the discriminator when training ELECTRA from scratch."""
    discriminator_loss_weight: float = 50.0
    """Weight of the discriminator's loss in the combined ELECTRA loss (50 in the paper: its per-token binary
    loss is much smaller than the generator's MLM loss)."""
    tie_generator_and_discriminator_embeddings: bool = True
    """Generator and discriminator share one token embedding table (as in the paper)."""

    # ---- optimisation -----------------------------------------------------------------------------------------
    num_train_epochs: int = 1
    """Passes over the training data (ignored when `max_steps` > 0)."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 trains for `num_train_epochs`."""
    train_batch_size: int = 8
    """Examples per step per process (the effective batch is this × processes × accumulation steps)."""
    eval_batch_size: int = 32
    """Examples per evaluation batch. Evaluation keeps no activations for a backward pass, so it affords larger
    batches than training; on a 2-core CPU 32 evaluates ~1.6x faster per token than 8."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before one optimizer step."""
    learning_rate: float = 4e-5
    """Peak learning rate of AdamW."""
    warmup_ratio: float = 0.06
    """Share of all steps spent warming the learning rate up linearly (used when `warmup_steps` is 0)."""
    warmup_steps: int = 0
    """Warm-up steps; overrides `warmup_ratio` when > 0."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    adam_epsilon: float = 1e-8
    """Epsilon added to the denominator of AdamW's update, for numerical stability."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each step."""
    manual_seed: int | None = None
    """Seed of every random choice (initialisation, data order, masks). None: 42, so runs repeat by default."""
    mixed_precision: str = "auto"
    """"auto": bf16 autocast where the hardware runs it natively (CUDA with bf16, else fp16 with loss scaling;
    CPUs with AVX512-BF16 or AMX), full fp32 elsewhere; "bf16" / "fp16": force that autocast; "no": full fp32."""

    # ---- saving, evaluating, logging --------------------------------------------------------------------------
    output_dir: str = "outputs/"
    """Where the final model, tokenizer, `model_args.json` and checkpoints go."""
    overwrite_output_dir: bool = False
    """Allow training into a non-empty `output_dir` (checked before any work is done)."""
    best_model_dir: str = "outputs/best_model"
    """Where the model with the lowest eval loss so far is kept when evaluating during training."""
    save_steps: int = 2000
    """Save `checkpoint-<step>/` every this many steps (0 or -1: never)."""
    save_model_every_epoch: bool = True
    """Also save a checkpoint at the end of every epoch."""
    save_total_limit: int | None = None
    """Keep only the newest this many checkpoints (None: keep all)."""
    resume_from_checkpoint: str | None = None
    """A checkpoint directory to continue from, or "latest" for the newest complete checkpoint in `output_dir`."""
    evaluate_during_training: bool = False
    """Evaluate on `eval_file` every `evaluate_during_training_steps` steps and keep the best model."""
    evaluate_during_training_steps: int = 2000
    """Steps between evaluations during training."""
    logging_steps: int = 50
    """Steps between progress lines (loss, learning rate, tokens/s, ETA) and tracked metrics."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _field_names():
            raise ArgsError(_unknown_message(name))
        object.__setattr__(self, name, value)

    # ---- construction -----------------------------------------------------------------------------------------
    def update_from_dict(self, values: dict) -> "LanguageModelingArgs":
        """Set every field named in `values`; unknown names are reported together, before anything is set."""
        unknown = [k for k in values if k not in _field_names()]
        if unknown:
            raise ArgsError("\n".join(_unknown_message(k) for k in unknown))
        for key, value in values.items():
            setattr(self, key, value)
        return self

    @classmethod
    def from_any(cls, args: "LanguageModelingArgs | dict | None") -> "LanguageModelingArgs":
        """A copy of `args` (a LanguageModelingArgs, a dict of fields, or None for defaults)."""
        if args is None:
            return cls()
        if isinstance(args, cls):
            return dataclasses.replace(args)
        if isinstance(args, dict):
            return cls().update_from_dict(args)
        raise ArgsError(f"args must be a LanguageModelingArgs or a dict, not {type(args).__name__}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, output_dir: str) -> None:
        """Write `model_args.json` into `output_dir` (atomically)."""
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "model_args.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, input_dir: str) -> "LanguageModelingArgs":
        with open(os.path.join(input_dir, "model_args.json")) as f:
            saved = json.load(f)
        known = {k: v for k, v in saved.items() if k in _field_names()}
        return cls().update_from_dict(known)

    # ---- validation -------------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every problem with these settings on their own (model-dependent checks live in the model)."""
        p = []
        if self.dataset_type not in DATASET_TYPES:
            p.append(f"dataset_type={self.dataset_type!r}: must be one of {', '.join(DATASET_TYPES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            p.append(f"mixed_precision={self.mixed_precision!r}: must be one of {', '.join(MIXED_PRECISION)}")
        for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if self.max_steps is not None and self.max_steps <= 0 and self.num_train_epochs < 1:
            p.append(f"num_train_epochs={self.num_train_epochs!r}: must be >= 1 when max_steps is not set")
        if not 0.0 < self.mlm_probability < 1.0:
            p.append(f"mlm_probability={self.mlm_probability!r}: must be between 0 and 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            p.append(f"warmup_ratio={self.warmup_ratio!r}: must be in [0, 1)")
        if self.learning_rate <= 0:
            p.append(f"learning_rate={self.learning_rate!r}: must be positive")
        if self.block_size != -1 and self.block_size < 8:
            p.append(f"block_size={self.block_size!r}: must be -1 (use max_seq_length) or at least 8")
        if self.max_seq_length < 8:
            p.append(f"max_seq_length={self.max_seq_length!r}: must be at least 8")
        if self.vocab_size is not None and self.vocab_size < 16:
            p.append(f"vocab_size={self.vocab_size!r}: must be at least 16")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            p.append(f"save_total_limit={self.save_total_limit!r}: must be None or >= 1")
        for name in ("config", "generator_config", "discriminator_config"):
            if not isinstance(getattr(self, name), dict):
                p.append(f"{name} must be a dict of config fields, not {type(getattr(self, name)).__name__}")
        if self.evaluate_during_training and self.evaluate_during_training_steps < 1:
            p.append("evaluate_during_training_steps must be >= 1 when evaluate_during_training is on")
        return p

    @property
    def seed(self) -> int:
        return 42 if self.manual_seed is None else int(self.manual_seed)


def _field_names() -> frozenset:
    names = getattr(LanguageModelingArgs, "_names", None)
    if names is None:
        names = frozenset(f.name for f in dataclasses.fields(LanguageModelingArgs))
        type.__setattr__(LanguageModelingArgs, "_names", names)
    return names


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(_field_names()), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown LanguageModelingArgs field {name!r}{hint}"


def field_docs() -> dict[str, str]:
    """Field name -> its docstring, read from this module's source (for --help texts and the docs)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(LanguageModelingArgs))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs
