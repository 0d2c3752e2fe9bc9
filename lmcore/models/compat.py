"""What each Simple Transformers setting does here: honoured, inert (accepted, warned about when set), or refused.

Simple Transformers 0.70.8's `LanguageModelingArgs` has 115 fields. Every one is a field of ours, so scripts, args
dicts and saved `model_args.json` files load. A name is:

- honoured: it does what the user expects (see its docstring in `lmcore.models.args`);
- inert: it has no effect here and cannot change the result (worker counts of a data loader we do not use, a
  tracker we do not ship); silent at its default, one warning naming it and the reason otherwise;
- refused: a feature not provided here whose absence would change the result (adapters, quantization, retrieval);
  at any value but its default it is an error at construction.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SIMPLE_TRANSFORMERS_FIELDS = tuple("""
adafactor_beta1 adafactor_clip_threshold adafactor_decay_rate adafactor_eps adafactor_relative_step
adafactor_scale_parameter adafactor_warmup_init adam_betas adam_epsilon best_model_dir block_size cache_dir chunk_text
clean_text config config_name cosine_schedule_num_cycles custom_layer_parameters custom_parameter_groups data_format
dataloader_num_workers dataset_cache_dir dataset_class dataset_type discriminator_config discriminator_loss_weight
do_lower_case dynamic_quantize early_stopping_consider_epochs early_stopping_delta early_stopping_metric
early_stopping_metric_minimize early_stopping_patience encoding eval_batch_size evaluate_during_training
evaluate_during_training_silent evaluate_during_training_steps evaluate_during_training_verbose evaluate_each_epoch
fp16 generator_config gradient_accumulation_steps handle_chinese_chars learning_rate local_rank loftq_bits
loftq_config logging_steps lora_config loss_args loss_type manual_seed max_grad_norm max_seq_length max_steps
min_frequency mlm mlm_probability model_class model_name model_type multiprocessing_chunksize n_gpu nf4 no_cache
no_save not_saved_args num_train_epochs optimizer output_dir overwrite_output_dir peft polynomial_decay_schedule_lr_end
polynomial_decay_schedule_power process_count qlora quantized_model rag rag_replace_method reprocess_input_data
save_best_model save_eval_checkpoints save_model_every_epoch save_optimizer_and_scheduler save_steps scheduler silent
skip_special_tokens sliding_window special_tokens special_tokens_list stream_hf_datasets stride strip_accents
tensorboard_dir thread_count tie_generator_and_discriminator_embeddings tokenizer_name tokenizer_type
train_batch_size train_custom_parameters_only trust_remote_code use_autoencoder use_cached_eval_features
use_early_stopping use_hf_datasets use_multiprocessing use_multiprocessing_for_evaluation vocab_size wandb_kwargs
wandb_project warmup_ratio warmup_steps weight_decay
""".split())
"""The 115 field names of Simple Transformers 0.70.8's LanguageModelingArgs (ModelArgs + its own)."""

INERT = {
    "model_class": "it only records Simple Transformers' class name",
    "n_gpu": "one process drives one device here; train on several GPUs with torchrun --nproc_per_node=N",
    "use_multiprocessing": "tokenizing workers are set by process_count",
    "use_multiprocessing_for_evaluation": "tokenizing workers are set by process_count",
    "multiprocessing_chunksize": "tokenizing workers take ~1 MB of text at a time",
    "dataloader_num_workers": "batches are sliced in-process from memory-mapped token files",
    "no_cache": "features are memory-mapped files and are always written under cache_dir, keyed by content",
    "use_cached_eval_features": "evaluation features are cached by content like training features "
                                "(reprocess_input_data=False reuses them)",
    "stream_hf_datasets": "corpora are always streamed, never held in memory whole",
    "wandb_project": "runs are tracked in MLflow (the pipeline) or TensorBoard (tensorboard_dir), not "
                     "Weights & Biases",
    "wandb_kwargs": "runs are tracked in MLflow (the pipeline) or TensorBoard (tensorboard_dir), not "
                    "Weights & Biases",
    "tokenizer_type": "the tokenizer class follows model_type, or the saved tokenizer's own configuration",
    "trust_remote_code": "only the model types in lmcore.models.registry are built; no code from a model repository "
                         "runs",
}

REFUSED = {
    "dynamic_quantize": "dynamic quantization is not provided",
    "quantized_model": "loading quantized models is not provided",
    "peft": "PEFT / LoRA adapters are not provided (full fine-tuning only)",
    "lora_config": "PEFT / LoRA adapters are not provided (full fine-tuning only)",
    "qlora": "QLoRA is not provided",
    "nf4": "4-bit NF4 loading (bitsandbytes) is not provided",
    "loftq_bits": "LoftQ initialisation of adapters is not provided",
    "loftq_config": "LoftQ initialisation of adapters is not provided",
    "rag": "retrieval-augmented training is not provided",
    "rag_replace_method": "retrieval-augmented training is not provided",
    "use_autoencoder": "the RoBERTa autoencoder variant is not provided",
    "loss_type": "custom losses are not provided (the objective's own loss is used)",
    "loss_args": "custom losses are not provided (the objective's own loss is used)",
}

HONOURED = tuple(n for n in SIMPLE_TRANSFORMERS_FIELDS if n not in INERT and n not in REFUSED)

# ---- ClassificationModel ----------------------------------------------------------------------------------------

MODEL_ARGS_FIELDS = tuple("""
adafactor_beta1 adafactor_clip_threshold adafactor_decay_rate adafactor_eps adafactor_relative_step
adafactor_scale_parameter adafactor_warmup_init adam_betas adam_epsilon best_model_dir cache_dir config
cosine_schedule_num_cycles custom_layer_parameters custom_parameter_groups dataloader_num_workers do_lower_case
dynamic_quantize early_stopping_consider_epochs early_stopping_delta early_stopping_metric
early_stopping_metric_minimize early_stopping_patience encoding eval_batch_size evaluate_during_training
evaluate_during_training_silent evaluate_during_training_steps evaluate_during_training_verbose evaluate_each_epoch
fp16 gradient_accumulation_steps learning_rate local_rank logging_steps loss_args loss_type manual_seed
max_grad_norm max_seq_length model_name model_type multiprocessing_chunksize n_gpu no_cache no_save not_saved_args
num_train_epochs optimizer output_dir overwrite_output_dir polynomial_decay_schedule_lr_end
polynomial_decay_schedule_power process_count quantized_model reprocess_input_data save_best_model
save_eval_checkpoints save_model_every_epoch save_optimizer_and_scheduler save_steps scheduler silent
skip_special_tokens tensorboard_dir thread_count tokenizer_name tokenizer_type train_batch_size
train_custom_parameters_only trust_remote_code use_cached_eval_features use_early_stopping use_hf_datasets
use_multiprocessing use_multiprocessing_for_evaluation wandb_kwargs wandb_project warmup_ratio warmup_steps
weight_decay
""".split())
"""Simple Transformers' `ModelArgs` (0.70): the settings every one of its models shares. Each is a
LanguageModelingArgs field too; ClassificationArgs takes them from there."""

CLASSIFICATION_OWN_FIELDS = tuple("""
model_class labels_list labels_map lazy_delimiter lazy_labels_column lazy_loading lazy_loading_start_line
lazy_text_a_column lazy_text_b_column lazy_text_column onnx regression sliding_window special_tokens_list stride
tie_value
""".split())
"""What Simple Transformers' `ClassificationArgs` adds to ModelArgs."""

CLASSIFICATION_FIELDS = MODEL_ARGS_FIELDS + CLASSIFICATION_OWN_FIELDS

_LAZY = ("labelled rows are tokenized once into compact arrays, never held as text; a file is read by its "
         "container (jsonl, csv / tsv with a header, parquet, arrow, saved datasets) with its columns named by "
         "text_column / label_column")
_WINDOW_ONLY = "it only matters with sliding_window, which is not provided"

CLASSIFICATION_INERT = {
    **{k: v for k, v in INERT.items() if k in CLASSIFICATION_FIELDS},
    "model_class": "it only records Simple Transformers' class name",
    "use_cached_eval_features": "labelled features are tokenized in memory on every call (nothing is cached)",
    "reprocess_input_data": "labelled features are tokenized in memory on every call (nothing is cached)",
    "no_cache": "labelled features are tokenized in memory on every call (nothing is cached)",
    "process_count": "labelled texts are tokenized in this process by the Rust tokenizer's own threads",
    "use_hf_datasets": "a file is always read by its container, whatever this says",
    "lazy_loading": _LAZY, "lazy_delimiter": _LAZY, "lazy_labels_column": _LAZY,
    "lazy_loading_start_line": _LAZY, "lazy_text_a_column": _LAZY, "lazy_text_b_column": _LAZY,
    "lazy_text_column": _LAZY,
    "stride": _WINDOW_ONLY, "tie_value": _WINDOW_ONLY,
}

CLASSIFICATION_REFUSED = {
    **{k: v for k, v in REFUSED.items() if k in CLASSIFICATION_FIELDS},
    "onnx": "ONNX export and ONNX Runtime inference are not provided",
    "sliding_window": "Simple Transformers cuts a long text into overlapping windows, trains on each window with "
                      "the text's label and predicts by a majority vote over windows (ties to tie_value): a "
                      "different example and a different score, not provided here. Texts are cut to "
                      "max_seq_length tokens (raise it, up to the model's positions)",
}

CLASSIFICATION_HONOURED = tuple(n for n in CLASSIFICATION_FIELDS
                                if n not in CLASSIFICATION_INERT and n not in CLASSIFICATION_REFUSED)

_TABLES = {"LanguageModelingArgs": (INERT, REFUSED), "ClassificationArgs": (CLASSIFICATION_INERT,
                                                                           CLASSIFICATION_REFUSED)}


def tables(args) -> tuple[dict, dict]:
    """(inert, refused) settings of the settings class `args` is an instance of."""
    return _TABLES[type(args).__name__]


def _defaults(args) -> dict:
    return type(args)().to_dict()


def _is_default(name: str, value, defaults: dict) -> bool:
    default = defaults[name]
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return value == default


def refused_problems(args) -> list[str]:
    """One problem line per refused setting that is not at its default."""
    defaults, (_, refused) = _defaults(args), tables(args)
    return [f"{name}={getattr(args, name)!r}: {reason}; leave it at its default ({defaults[name]!r})"
            for name, reason in refused.items() if not _is_default(name, getattr(args, name), defaults)]


def warn_inert(args, already_warned: set) -> list[str]:
    """Log one warning per inert setting that is not at its default (once per name in `already_warned`);
    returns the names warned about now."""
    defaults, (inert, _) = _defaults(args), tables(args)
    warned = []
    for name, reason in inert.items():
        value = getattr(args, name)
        if name not in already_warned and not _is_default(name, value, defaults):
            log.warning("%s=%r has no effect here: %s", name, value, reason)
            already_warned.add(name)
            warned.append(name)
    return warned
