"""`LanguageModelingArgs`: every setting of a language-modeling run, in one dataclass; `Settings`, what every
settings dataclass of the engine shares (checked names, dict / JSON round trips, validation).

Field names follow Simple Transformers (all 115 names of its 0.70.8 `LanguageModelingArgs` exist here), so user
code and saved `model_args.json` files written for it work unchanged. Each field carries a docstring (the string
under it). What each Simple Transformers name does here (honoured, inert with a warning, or refused) is listed in
`lmcore.models.compat`. Unknown names are rejected at once, with the nearest valid name, whether they arrive as
attributes (`args.num_train_epoch = 1`), dict keys (`args={"num_train_epoch": 1}`) or constructor keywords.
`lmcore.models.classification_args.ClassificationArgs` takes the fields both kinds of run share from here (one
definition and one docstring per field) and adds its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..base.atomic import write_text
from .compat import refused_problems

log = logging.getLogger(__name__)

DATASET_TYPES = ("simple", "line_by_line", "text")
DATASET_TYPE_ALIASES = {"None": "simple", "": "simple", "line_by_line_lazy": "line_by_line"}
"""Simple Transformers' default dataset_type is the string "None" (its plain per-line dataset); older releases
had a lazily loaded line-by-line type. Features here are memory-mapped, so every type is lazy."""
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
SCHEDULERS = ("constant_schedule", "constant_schedule_with_warmup", "linear_schedule_with_warmup",
              "cosine_schedule_with_warmup", "cosine_with_hard_restarts_schedule_with_warmup",
              "polynomial_decay_schedule_with_warmup")
OPTIMIZERS = ("AdamW", "Adafactor")
DATA_FORMATS = ("text", "tsv", "csv", "json", "jsonl")


class ArgsError(ValueError):
    """Bad settings: the message lists every problem found, one per line."""


class Settings:
    """What every settings dataclass of the engine shares: names checked on every assignment (the nearest valid
    name suggested), dict and `model_args.json` round trips, and validation that lists every problem at once.
    Subclasses are dataclasses."""

    def __new__(cls, *args, **kwargs):
        # Keyword names are checked here, before the dataclass's generated __init__ runs: it would refuse an
        # unknown one too, but with a bare TypeError and no suggestion.
        unknown = [k for k in kwargs if k not in cls.names()]
        if unknown:
            raise ArgsError("\n".join(_unknown_message(cls, k) for k in unknown))
        return super().__new__(cls)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in type(self).names():
            raise ArgsError(_unknown_message(type(self), name))
        object.__setattr__(self, name, value)

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> frozenset:
        """Every field name of this settings class."""
        names = cls.__dict__.get("_names")
        if names is None:
            names = frozenset(f.name for f in dataclasses.fields(cls))
            type.__setattr__(cls, "_names", names)
        return names

    def update_from_dict(self, values: dict):
        """Set every field named in `values`; unknown names are reported together, before anything is set."""
        if not isinstance(values, dict):
            raise ArgsError(f"args must be a dict of {type(self).__name__} fields, not {type(values).__name__}")
        unknown = [k for k in values if k not in type(self).names()]
        if unknown:
            raise ArgsError("\n".join(_unknown_message(type(self), k) for k in unknown))
        for key, value in values.items():
            setattr(self, key, value)
        return self

    @classmethod
    def from_any(cls, args):
        """A copy of `args` (an instance of this class, a dict of fields, or None for defaults)."""
        if args is None:
            return cls()
        if isinstance(args, cls):
            return dataclasses.replace(args)
        if isinstance(args, dict):
            return cls().update_from_dict(args)
        raise ArgsError(f"args must be a {cls.__name__} or a dict, not {type(args).__name__}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def changed(self) -> dict:
        """The fields whose value differs from the default."""
        default = type(self)()
        return {k: v for k, v in self.to_dict().items() if not _same(v, getattr(default, k))}

    def for_saving(self) -> dict:
        """What `model_args.json` holds: every field but `not_saved_args`, as JSON values (a dataset_class by its
        import path)."""
        out = {}
        for k, v in self.to_dict().items():
            if k in (self.not_saved_args or []):
                continue
            if k == "dataset_class" and v is not None:
                v = f"{v.__module__}.{v.__qualname__}" if isinstance(v, type) else repr(v)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def save(self, output_dir: str) -> None:
        """Write `model_args.json` into `output_dir` (atomically)."""
        os.makedirs(output_dir, exist_ok=True)
        write_text(os.path.join(output_dir, "model_args.json"), json.dumps(self.for_saving(), indent=2,
                                                                           sort_keys=True, default=str))

    @classmethod
    def load(cls, input_dir: str):
        return cls().update_from_dict(cls.saved_values(input_dir))

    @classmethod
    def saved_values(cls, input_dir: str) -> dict:
        """The known fields of `input_dir/model_args.json` ({} when there is none). Names another version wrote
        that this one does not know are skipped with one log line; a saved dataset_class (an import path) is
        dropped, since a class cannot be restored from a file."""
        path = os.path.join(input_dir, "model_args.json")
        if not os.path.isfile(path):
            return {}
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ArgsError(f"{path}: cannot be read as JSON ({e})") from None
        if not isinstance(saved, dict):
            raise ArgsError(f"{path}: expected a JSON object of settings")
        skipped = sorted(k for k in saved if k not in cls.names())
        if skipped:
            log.info("%s: skipping settings this version does not know: %s", path, ", ".join(skipped))
        known = {k: v for k, v in saved.items() if k in cls.names() and k != "dataset_class"}
        for name in ("adam_betas", "adafactor_eps"):
            if isinstance(known.get(name), list):
                known[name] = tuple(known[name])
        return known

    # ---- validation -------------------------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return 42 if self.manual_seed is None else int(self.manual_seed)

    def problems(self) -> list[str]:
        """Every problem with these settings on their own (model-dependent checks live in the model)."""
        p = []
        if self.mixed_precision not in MIXED_PRECISION:
            p.append(f"mixed_precision={self.mixed_precision!r}: must be one of {', '.join(MIXED_PRECISION)}")
        if self.compile not in (True, False, "auto"):
            p.append(f"compile={self.compile!r}: must be True, False or \"auto\"")
        if not self.fp16 and self.mixed_precision not in ("auto", "no"):
            p.append(f"fp16=False asks for full fp32 but mixed_precision={self.mixed_precision!r}: set only one")
        for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if self.max_steps is not None and self.max_steps <= 0 and self.num_train_epochs < 1:
            p.append(f"num_train_epochs={self.num_train_epochs!r}: must be >= 1 when max_steps is not set")
        if not 0.0 <= self.warmup_ratio < 1.0:
            p.append(f"warmup_ratio={self.warmup_ratio!r}: must be in [0, 1)")
        if self.learning_rate <= 0:
            p.append(f"learning_rate={self.learning_rate!r}: must be positive")
        if self.max_seq_length < 8:
            p.append(f"max_seq_length={self.max_seq_length!r}: must be at least 8")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            p.append(f"save_total_limit={self.save_total_limit!r}: must be None or >= 1")
        for name in [n for n in ("config", "generator_config", "discriminator_config") if n in self.names()]:
            if not isinstance(getattr(self, name), dict):
                p.append(f"{name} must be a dict of config fields, not {type(getattr(self, name)).__name__}")
        if self.evaluate_during_training and self.evaluate_during_training_steps < 1:
            p.append("evaluate_during_training_steps must be >= 1 when evaluate_during_training is on")
        if self.scheduler not in SCHEDULERS:
            p.append(f"scheduler={self.scheduler!r}: must be one of {', '.join(SCHEDULERS)}")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer={self.optimizer!r}: must be one of {', '.join(OPTIMIZERS)} "
                     "(Adam8bit needs bitsandbytes and a GPU and is not provided)")
        if self.optimizer == "Adafactor" and self.adafactor_warmup_init and not self.adafactor_relative_step:
            p.append("adafactor_warmup_init=True needs adafactor_relative_step=True (Adafactor's own rule)")
        if len(tuple(self.adam_betas)) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            p.append(f"adam_betas={self.adam_betas!r}: must be two numbers in [0, 1)")
        for name in ("text_column", "dataset_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                p.append(f"{name}={getattr(self, name)!r}: must be a non-empty string")
        if self.dataset_config is not None and (not isinstance(self.dataset_config, str) or not self.dataset_config):
            p.append(f"dataset_config={self.dataset_config!r}: must be None or a configuration name")
        if self.process_count is not None and (not isinstance(self.process_count, int) or self.process_count < 1):
            p.append(f"process_count={self.process_count!r}: must be None or a positive integer")
        if self.thread_count is not None and (not isinstance(self.thread_count, int) or self.thread_count < 1):
            p.append(f"thread_count={self.thread_count!r}: must be None or a positive integer")
        if self.early_stopping_patience < 1:
            p.append(f"early_stopping_patience={self.early_stopping_patience!r}: must be >= 1")
        if self.encoding is not None:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError:
                p.append(f"encoding={self.encoding!r}: not a text encoding Python knows")
        p.extend(_group_problems(self))
        unknown_unsaved = [k for k in (self.not_saved_args or []) if k not in self.names()]
        if unknown_unsaved:
            p.append("not_saved_args names unknown fields: " + ", ".join(map(repr, unknown_unsaved)))
        p.extend(self.own_problems())
        p.extend(refused_problems(self))
        return p

    def own_problems(self) -> list[str]:
        """The problems of the fields only this settings class has."""
        return []


@dataclass
class LanguageModelingArgs(Settings):
    # ---- data -------------------------------------------------------------------------------------------------
    dataset_type: str = "simple"
    """How the corpus becomes examples: "simple" concatenates every line and cuts the token stream into blocks of
    `block_size` (no padding); "line_by_line" makes each non-empty line one example (dynamic padding, lines of
    similar length batched together); "text" treats each file as one document cut into blocks. "None" (Simple
    Transformers' default) means "simple"."""
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
    encoding: str | None = None
    """Text encoding of the corpus files (a Python codec name such as "latin-1"). None: UTF-8."""
    sliding_window: bool = False
    """Cut long text into overlapping windows instead of back-to-back blocks: window starts are `stride` x the
    window length apart. Training sees every window; evaluation scores each token once, in the first window
    that reaches it, with the overlap as context (strided perplexity of a fixed-length model)."""
    stride: float = 0.8
    """With `sliding_window`: distance between window starts as a share of the window (0 < stride <= 1; 1 means
    no overlap)."""
    dataset_class: Any = None
    """A torch Dataset class to build examples with instead of the built-in reader, called as
    `dataset_class(tokenizer, args, file_path, mode, block_size)` (mode "train" or "dev"); its items are 1-D
    tensors (or lists) of token ids, special tokens included."""
    process_count: int | None = None
    """Worker processes that tokenize the corpus (the features are identical whatever the count). None: the cores
    this process may use. Small corpora are tokenized in-process."""
    thread_count: int | None = None
    """Threads torch uses for compute in this process. None: torch's default (one per core; under torchrun the
    cores are shared out between local processes)."""
    use_hf_datasets: bool = False
    """Read every corpus file in `data_format`, whatever its name (Simple Transformers' switch). Without it each
    source is read by what it is (extension, or a saved / cached dataset): see README, "Corpus input"."""
    data_format: str = "text"
    """With `use_hf_datasets`: "text" (a line per row), "tsv" / "csv" (a header row, then the `text_column` cell
    of each row), "json" / "jsonl" (one object per line, its `text_column` field)."""
    dataset_cache_dir: str | None = None
    """The `datasets` cache dataset names are looked up in (None: its default, ~/.cache/huggingface/datasets);
    nothing is ever downloaded."""
    chunk_text: bool = True
    """With `use_hf_datasets`: long rows are split into blocks (True) like any text; False cuts each row to one
    example of `max_seq_length` tokens (line_by_line)."""
    text_column: str = "text"
    """The column (JSON field, CSV header name) holding the text in JSON Lines, CSV / TSV, Parquet, Arrow and
    datasets corpora; the other columns are ignored. Rows whose text is empty or not a string are skipped and
    counted."""
    dataset_split: str = "train"
    """The split read from a saved DatasetDict folder or a dataset name in the datasets cache (`NAME[SPLIT]` or
    `FOLDER[SPLIT]` in a path chooses one for that path alone)."""
    dataset_config: str | None = None
    """The configuration of a dataset name read from the datasets cache. None: the only one cached (an error
    lists them when there are several)."""

    # ---- tokenizer (training from scratch) --------------------------------------------------------------------
    vocab_size: int | None = None
    """Vocabulary size of the tokenizer trained when `model_name` is None (default 30000 then)."""
    min_frequency: int = 2
    """A token must occur this often in the corpus to enter a trained vocabulary."""
    special_tokens: list[str] | None = None
    """Special tokens of a trained tokenizer. None: the model type's own ([CLS] [SEP] ... for BERT, <s> </s> ...
    for RoBERTa). A list replaces them, in the order the model type uses."""
    special_tokens_list: list = field(default_factory=list)
    """Extra tokens added to the tokenizer as special tokens (never split, never masked); the model's embeddings
    grow to fit them."""
    tokenizer_name: str | None = None
    """A saved tokenizer (directory) to use instead of the model's own, or instead of training one."""
    do_lower_case: bool = False
    """Lower-case the text. A trained vocabulary follows this too, so a cased vocabulary never sees lower-cased
    input and an uncased one never sees capitals."""
    clean_text: bool = True
    """WordPiece (bert, distilbert, electra) tokenizers trained here: drop control characters and turn every kind
    of whitespace into a plain space before tokenizing."""
    strip_accents: bool | None = None
    """WordPiece tokenizers trained here: remove accents (é -> e). None: strip them when lower-casing (BERT's
    own rule); True / False: always / never."""
    handle_chinese_chars: bool = True
    """WordPiece tokenizers trained here: put spaces around CJK characters so each becomes its own token."""
    skip_special_tokens: bool = True
    """`predict` returns generated text without special tokens."""

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
    model_name: str | None = None
    """Set by the model: the `model_name` it was built from (recorded in model_args.json)."""
    model_type: str | None = None
    """Set by the model: its `model_type` (recorded in model_args.json)."""

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
    optimizer: str = "AdamW"
    """"AdamW" (torch's, fused where available) or "Adafactor" (transformers', with the adafactor_* settings)."""
    learning_rate: float = 4e-5
    """Peak learning rate (the schedule scales it step by step)."""
    scheduler: str = "linear_schedule_with_warmup"
    """Learning-rate schedule, as transformers defines them: constant_schedule, constant_schedule_with_warmup,
    linear_schedule_with_warmup, cosine_schedule_with_warmup, cosine_with_hard_restarts_schedule_with_warmup,
    polynomial_decay_schedule_with_warmup. Computed from the step alone, so resume never loses it."""
    cosine_schedule_num_cycles: float = 0.5
    """Cosine schedules: waves after warm-up (0.5: one half-wave from the peak down to 0; hard restarts: the
    number of restarts)."""
    polynomial_decay_schedule_lr_end: float = 1e-7
    """Polynomial decay: the learning rate reached at the last step."""
    polynomial_decay_schedule_power: float = 1.0
    """Polynomial decay: the power of the decay (1.0 is linear)."""
    warmup_ratio: float = 0.06
    """Share of all steps spent warming the learning rate up linearly (used when `warmup_steps` is 0)."""
    warmup_steps: int = 0
    """Warm-up steps; overrides `warmup_ratio` when > 0."""
    weight_decay: float = 0.0
    """Weight decay (not applied to biases and LayerNorm weights)."""
    adam_epsilon: float = 1e-8
    """Epsilon added to the denominator of AdamW's update, for numerical stability."""
    adam_betas: tuple = (0.9, 0.999)
    """AdamW's decay rates of the first and second moment estimates."""
    adafactor_eps: tuple = (1e-30, 1e-3)
    """Adafactor: regularisation constants of the squared gradient and of the parameter scale."""
    adafactor_clip_threshold: float = 1.0
    """Adafactor: threshold of the root-mean-square of the final update."""
    adafactor_decay_rate: float = -0.8
    """Adafactor: coefficient of the running average of the squared gradient."""
    adafactor_beta1: float | None = None
    """Adafactor: coefficient of the running average of the gradient (None: no first moment, less memory)."""
    adafactor_scale_parameter: bool = True
    """Adafactor: scale the learning rate by the root-mean-square of the parameter."""
    adafactor_relative_step: bool = True
    """Adafactor: use its own time-dependent step size instead of `learning_rate` and the schedule."""
    adafactor_warmup_init: bool = True
    """Adafactor with relative steps: warm its step size up from a small value."""
    custom_parameter_groups: list = field(default_factory=list)
    """Optimizer groups by parameter name: [{"params": ["bert.embeddings.word_embeddings.weight"], "lr": 1e-5}];
    every other key (lr, weight_decay) applies to that group (`model.get_named_parameters()` lists the names)."""
    custom_layer_parameters: list = field(default_factory=list)
    """Optimizer groups by layer number: [{"layer": 0, "lr": 1e-5}] takes every parameter whose name holds
    "layer.0." (biases and LayerNorm weights of that layer without weight decay)."""
    train_custom_parameters_only: bool = False
    """Train only the parameters of the custom groups above; every other parameter is frozen."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each step (not with Adafactor, which clips its updates)."""
    manual_seed: int | None = None
    """Seed of every random choice (initialisation, data order, masks). None: 42, so runs repeat by default."""
    mixed_precision: str = "auto"
    """"auto": bf16 autocast where the hardware runs it natively (CUDA with bf16, else fp16 with loss scaling;
    CPUs with AVX512-BF16 or AMX), full fp32 elsewhere; "bf16" / "fp16": force that autocast; "no": full fp32.
    Resolved once, with the device, into the run's `lmcore.training.precision.Precision`."""
    compile: bool | str = "auto"
    """Run the training steps through `torch.compile` (inductor): True, False, or "auto": on where it earns back its
    warm-up (CUDA, for runs of many steps; on the CPU a compiled step measured no faster: `lmcore.training.compiling`),
    else eager. Saved models are the same either way; evaluation and generation always run eager. Where compiling
    fails (model type, torch, no C++ compiler) the run says why in one line and trains eager."""
    fp16: bool = True
    """Simple Transformers' switch for mixed precision: True allows it (`mixed_precision` decides how, "auto" by
    default), False means full fp32 (mixed_precision="no")."""
    local_rank: int = -1
    """Set by `python -m torch.distributed.launch` scripts from their --local_rank argument: this process's GPU
    on its machine. The engine joins the process group itself, so it is only checked against the launcher's."""

    # ---- saving, evaluating, logging --------------------------------------------------------------------------
    output_dir: str = "outputs/"
    """Where the final model, tokenizer, `model_args.json` and checkpoints go."""
    overwrite_output_dir: bool = False
    """Allow training into a non-empty `output_dir` (checked before any work is done)."""
    no_save: bool = False
    """Write nothing: no model, checkpoint, best model or args file (the caches under `cache_dir` stay)."""
    not_saved_args: list = field(default_factory=list)
    """Field names left out of the saved `model_args.json`."""
    best_model_dir: str = "outputs/best_model"
    """Where the model with the best evaluation so far is kept when evaluating during training."""
    save_best_model: bool = True
    """Keep the best model in `best_model_dir` when evaluating during training."""
    save_steps: int = 2000
    """Save `checkpoint-<step>/` every this many steps (0 or -1: never)."""
    save_model_every_epoch: bool = True
    """Save `checkpoint-<step>-epoch-<n>/` at the end of every epoch."""
    save_eval_checkpoints: bool = True
    """Save `checkpoint-<step>/` at every evaluation during training, with its eval_results.txt."""
    save_optimizer_and_scheduler: bool = True
    """Checkpoints hold the optimizer state (and every RNG). False saves space, but a resumed run then restarts
    the optimizer's moments and is no longer identical to an uninterrupted one."""
    save_total_limit: int | None = None
    """Keep only the newest this many checkpoints (None: keep all)."""
    resume_from_checkpoint: str | None = None
    """A checkpoint directory to continue from, or "latest" for the newest complete checkpoint in `output_dir`."""
    evaluate_during_training: bool = False
    """Evaluate on `eval_file` every `evaluate_during_training_steps` steps and keep the best model."""
    evaluate_during_training_steps: int = 2000
    """Steps between evaluations during training."""
    evaluate_each_epoch: bool = True
    """When evaluating during training, also evaluate at the end of every epoch."""
    evaluate_during_training_verbose: bool = False
    """Log every evaluation result during training (otherwise they go to the tracker and the returned scores)."""
    evaluate_during_training_silent: bool = True
    """No progress lines from the evaluations during training."""
    use_early_stopping: bool = False
    """Stop training once `early_stopping_metric` has not improved by more than `early_stopping_delta` for
    `early_stopping_patience` evaluations in a row (needs evaluate_during_training)."""
    early_stopping_metric: str = "eval_loss"
    """The evaluation result early stopping and the best model watch (eval_loss, perplexity, ...)."""
    early_stopping_metric_minimize: bool = True
    """Lower `early_stopping_metric` is better (False: higher is better)."""
    early_stopping_delta: float = 0.0
    """How much better than the best so far an evaluation must be to count as an improvement."""
    early_stopping_patience: int = 3
    """Evaluations in a row without improvement after which training stops."""
    early_stopping_consider_epochs: bool = False
    """Count the end-of-epoch evaluations (evaluate_each_epoch) towards early stopping too."""
    logging_steps: int = 50
    """Steps between progress lines (loss, learning rate, tokens/s, ETA) and tracked metrics."""
    silent: bool = False
    """No progress lines (training, evaluation, tokenizing); warnings and errors still show."""
    tensorboard_dir: str | None = None
    """Also write the per-step metrics (loss, learning rate, tokens/s, evaluations) as TensorBoard event files
    here (needs the `tensorboard` package)."""

    # ---- accepted from Simple Transformers, inert or refused here (see lmcore.models.compat) -------------------------
    model_class: str = "LanguageModelingModel"
    """Simple Transformers' record of the model class; informational."""
    n_gpu: int = 1
    """Inert: one process drives one device; use torchrun for several GPUs."""
    use_multiprocessing: bool = True
    """Inert: see `process_count`."""
    use_multiprocessing_for_evaluation: bool = True
    """Inert: see `process_count`."""
    multiprocessing_chunksize: int = -1
    """Inert: tokenizing workers take ~1 MB of text at a time."""
    dataloader_num_workers: int = 0
    """Inert: batches are sliced from memory-mapped token files in-process, which no worker would speed up."""
    no_cache: bool = False
    """Inert: features are memory-mapped files, always written under `cache_dir` (keyed by content)."""
    use_cached_eval_features: bool = False
    """Inert: evaluation features are cached by content like training features (see reprocess_input_data)."""
    stream_hf_datasets: bool = False
    """Inert: corpora are always streamed, never held in memory whole."""
    wandb_project: str | None = None
    """Inert: runs are tracked in MLflow (the pipeline) or TensorBoard (`tensorboard_dir`)."""
    wandb_kwargs: dict = field(default_factory=dict)
    """Inert: see `wandb_project`."""
    tokenizer_type: str | None = None
    """Inert: the tokenizer class follows model_type (or the saved tokenizer's own config)."""
    trust_remote_code: bool = False
    """Inert: only the model types listed in lmcore.models.registry are built; no code from a model repository runs."""
    dynamic_quantize: bool = False
    """Not provided: dynamic quantization is not supported."""
    quantized_model: bool = False
    """Not provided: loading quantized models is not supported."""
    peft: bool = False
    """Not provided: PEFT / LoRA adapters are not supported."""
    lora_config: dict = field(default_factory=dict)
    """Not provided: see `peft`."""
    qlora: bool = False
    """Not provided: see `peft`."""
    nf4: bool = False
    """Not provided: 4-bit (NF4) loading is not supported."""
    loftq_bits: int = 4
    """Not provided: see `peft`."""
    loftq_config: dict = field(default_factory=dict)
    """Not provided: see `peft`."""
    rag: bool = False
    """Not provided: retrieval-augmented training is not supported."""
    rag_replace_method: str = "prepend"
    """Not provided: see `rag`."""
    use_autoencoder: bool = False
    """Not provided: the RoBERTa autoencoder variant is not supported."""
    loss_type: str | None = None
    """Not provided: the loss is the objective's own (cross-entropy; ELECTRA's combined loss)."""
    loss_args: dict = field(default_factory=dict)
    """Not provided: see `loss_type`."""

    @property
    def dataset_kind(self) -> str:
        """`dataset_type` with Simple Transformers' aliases resolved ("None" -> "simple")."""
        kind = DATASET_TYPE_ALIASES.get(self.dataset_type, self.dataset_type)
        if self.use_hf_datasets and not self.chunk_text:
            return "line_by_line"
        return kind

    def own_problems(self) -> list[str]:
        p = []
        if self.dataset_kind not in DATASET_TYPES:
            p.append(f"dataset_type={self.dataset_type!r}: must be one of {', '.join(DATASET_TYPES)}")
        if not 0.0 < self.mlm_probability < 1.0:
            p.append(f"mlm_probability={self.mlm_probability!r}: must be between 0 and 1")
        if self.block_size != -1 and self.block_size < 8:
            p.append(f"block_size={self.block_size!r}: must be -1 (use max_seq_length) or at least 8")
        if self.vocab_size is not None and self.vocab_size < 16:
            p.append(f"vocab_size={self.vocab_size!r}: must be at least 16")
        if not (isinstance(self.stride, (int, float)) and 0.0 < self.stride <= 1.0):
            p.append(f"stride={self.stride!r}: must be in (0, 1] (a share of the window)")
        if self.use_hf_datasets and self.data_format not in DATA_FORMATS:
            p.append(f"data_format={self.data_format!r}: must be one of {', '.join(DATA_FORMATS)}")
        return p


def _group_problems(args: Settings) -> list[str]:
    p = []
    for i, group in enumerate(args.custom_parameter_groups or []):
        if not isinstance(group, dict) or not isinstance(group.get("params"), (list, tuple)):
            p.append(f"custom_parameter_groups[{i}] must be a dict with a 'params' list of parameter names")
    for i, group in enumerate(args.custom_layer_parameters or []):
        if not isinstance(group, dict) or not isinstance(group.get("layer"), int):
            p.append(f"custom_layer_parameters[{i}] must be a dict with an integer 'layer'")
    if args.train_custom_parameters_only and not (args.custom_parameter_groups or args.custom_layer_parameters):
        p.append("train_custom_parameters_only=True but no custom_parameter_groups or custom_layer_parameters "
                 "are given: nothing would train")
    return p


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def field_names() -> frozenset:
    """Every field name of LanguageModelingArgs."""
    return LanguageModelingArgs.names()


def _unknown_message(cls: type, name: str) -> str:
    close = difflib.get_close_matches(name, sorted(cls.names()), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {cls.__name__} field {name!r}{hint}"


def field_docs(cls: type | None = None) -> dict[str, str]:
    """Field name -> its docstring, read from the source of `cls` (default LanguageModelingArgs), for --help
    texts and the docs."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls or LanguageModelingArgs))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs
