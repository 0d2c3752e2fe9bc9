"""`ClassificationModel`: the front door of sequence classification (Simple Transformers' API), built on the same
rooms as `LanguageModelingModel`: model families (which part of a saved model is the encoder), the labelled
feature layer (`lmcore.data.labelled`), one more objective (`lmcore.objectives.classify`), the one training loop
(`train.fit`), the evaluator, checkpoints and the precision rule.

    from lmcore import ClassificationModel, ClassificationArgs
    model = ClassificationModel("bert", "outputs/", args={"num_train_epochs": 3})
    global_step, training_details = model.train_model(train_df, eval_df=eval_df)
    result, model_outputs, wrong_predictions = model.eval_model(eval_df)
    predictions, raw_outputs = model.predict(["a text", "another"])
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import transformers as hf

from .base import atomic
from .models import compat
from .training import checkpoint, console, dist, hardware, precision
from .models.args import ArgsError
from .models.classification_args import ClassificationArgs
from .objectives.classify import ClassificationObjective, SequenceClassifierForTraining, spearman
from .training.evaluate import evaluate
from .models.families import EncoderSource, apply_config_overrides, family_of, millions
from .models.hub import from_pretrained
from .data.labelled import LabelledRows, encode, infer_labels, label_ids, read_labelled
from .model import (NOT_RESTORED, _check_local_rank, _seed_everything, _warn_unused, apply_args, quiet_engine,
                    report_evaluation, resume_state, run_tracker, training_details, training_result)
from .models.registry import MODEL_TYPES, get_model_type
from .data.tokenizer import add_special_tokens_list, load_tokenizer, padding_id
from .training.tracking import NullTracker
from .training.train import TrainSetup, fit, write_results

log = logging.getLogger(__name__)


class ClassificationModel:
    """A sequence classifier (binary, multi-class or regression; single texts or pairs) fine-tuned from any
    lmcore output or published checkpoint.

    Attributes, as in Simple Transformers: `model` (the Hugging Face *ForSequenceClassification module),
    `tokenizer`, `args` (ClassificationArgs), `device`, `num_labels`; and `precision`
    (lmcore.training.precision.Precision).
    """

    def __init__(self, model_type: str, model_name: str, num_labels: int | None = None, weight: list | None = None,
                 args: ClassificationArgs | dict | None = None, use_cuda: bool = True, cuda_device: int = -1,
                 tracker=None, **kwargs):
        """`model_name`: an lmcore output folder (an MLM run: its encoder; an ELECTRA run: its discriminator),
        a discriminator folder, a Simple Transformers ELECTRA checkpoint, a published checkpoint, a saved
        classifier (its settings and labels come back), or a hub name in the local cache. `num_labels`: classes
        (default: from labels_list, else found in the training labels; 1 with regression). `weight`: one loss
        weight per class. `args={"random_init": True}` keeps the architecture and tokenizer of `model_name` and
        initialises every weight from the seed (the baseline that says whether pretraining helped)."""
        console.show_progress()
        self.args = _initial_args(model_name, args)
        if kwargs.get("tokenizer_name"):
            self.args.tokenizer_name = kwargs.pop("tokenizer_name")
        if kwargs.pop("multi_label", False):
            raise ArgsError(_MULTI_LABEL)
        _warn_unused({k: v for k, v in kwargs.items() if v is not None}, "ClassificationModel()")
        self.model_type, self.model_name, self.weight = model_type, model_name, weight
        self.tracker = tracker or NullTracker()
        self.results: dict = {}
        self.training_details: dict = {}
        self._warned: set = set()
        compat.warn_inert(self.args, self._warned)
        self._check(model_type, model_name, num_labels, weight)
        self.entry = get_model_type(model_type)  # the registry entry of model_type
        self.family = family_of(self.entry)
        _check_local_rank(self.args.local_rank)
        cuda_device = self.args.local_rank if self.args.local_rank != -1 and cuda_device == -1 else cuda_device
        self.device = torch.device("cuda", cuda_device if cuda_device >= 0 else dist.local_rank()) \
            if use_cuda and torch.cuda.is_available() else torch.device("cpu")
        self.precision = precision.for_args(self.device, self.args)
        dist.init(use_cuda)
        dist.set_threads(self.args.thread_count)
        self.args.model_name, self.args.model_type = model_name, model_type
        self._labels_fixed = bool(self.args.labels_list) or self.args.regression or num_labels is not None
        self.num_labels = self._num_labels(num_labels)
        self._resume_state = checkpoint.load_state(model_name) if checkpoint.is_checkpoint(model_name) else None
        self._build()

    # ---- construction -----------------------------------------------------------------------------------------
    def _check(self, model_type, model_name, num_labels, weight) -> None:
        problems = self.args.problems()
        entry = MODEL_TYPES.get(model_type)
        if entry is None:
            problems.append(f"unknown model_type {model_type!r}: choose one of {', '.join(sorted(MODEL_TYPES))}")
        elif entry.classifier_cls is None:
            problems.append(f"model_type {model_type!r} has no sequence-classification head")
        if not model_name:
            problems.append("model_name is required: a pretrained model to fine-tune (for a randomly initialised "
                            "baseline give a model folder with args={'random_init': True}: its architecture and "
                            "tokenizer are kept)")
        if self.args.regression and num_labels not in (None, 1):
            problems.append(f"regression=True predicts one number: num_labels must be 1, not {num_labels}")
        if weight is not None and num_labels is not None and len(weight) != num_labels:
            problems.append(f"weight has {len(weight)} entries for {num_labels} labels")
        if problems:
            raise ArgsError("invalid settings:\n  " + "\n  ".join(problems))

    def _num_labels(self, num_labels: int | None) -> int:
        a = self.args
        if a.regression:
            return 1
        if a.labels_list:
            if num_labels is not None and num_labels != len(a.labels_list):
                raise ArgsError(f"num_labels={num_labels} but labels_list has {len(a.labels_list)} labels")
            a.labels_map = a.labels_map or {label: i for i, label in enumerate(a.labels_list)}
            return len(a.labels_list)
        return num_labels or 2

    def _build(self) -> None:
        """Load (or initialise) the classifier for `self.num_labels` on this process's device."""
        source = self.family.encoder_source(self.model_name)
        if source.note and dist.is_main():
            log.info("%s", source.note)
        _seed_everything(self.args.seed)
        self.model, self.tokenizer = load_classifier(self.entry, source, self.num_labels, self.args)
        self.model.config.problem_type = "regression" if self.args.regression else "single_label_classification"
        if self.args.special_tokens_list:
            if add_special_tokens_list(self.tokenizer, self.args.special_tokens_list):
                self.model.resize_token_embeddings(len(self.tokenizer))
        _seed_everything(self.args.seed + dist.rank())  # dropout differs per rank; weights are equal
        hardware.choose_attention(self.model, self.precision)
        hardware.fuse_activations(self.model)
        self.model.to(self.device)

    def _labels_for(self, rows: LabelledRows) -> list:
        """The labels_list: the given one, else decided by `rows` (integers: their own ids; strings: sorted)."""
        a = self.args
        if a.labels_list or a.regression:
            return list(a.labels_list)
        found = infer_labels(rows.labels)
        integers = all(isinstance(v, int) for v in found)
        if self._labels_fixed and (len(found) > self.num_labels or not integers and len(found) != self.num_labels):
            raise ArgsError(f"{rows.where}: {len(found)} labels ({', '.join(map(str, found[:10]))}) for "
                            f"num_labels={self.num_labels}; give labels_list to name them")
        return list(range(self.num_labels)) if self._labels_fixed and integers else found

    def _use_labels(self, labels: list) -> None:
        """Record `labels` (labels_list, labels_map); a head of another size is built afresh (before training)."""
        if not self.args.regression and not self.args.labels_list:
            self.args.labels_list, self.args.labels_map = labels, {label: i for i, label in enumerate(labels)}
            if len(labels) != self.num_labels:
                log.info("%d labels (%s): a head of that size", len(labels), ", ".join(map(str, labels[:10])))
                self.num_labels = len(labels)
                self._build()
        self._labels_fixed = True

    # ---- training ---------------------------------------------------------------------------------------------
    def train_model(self, train_df, output_dir: str | None = None, show_running_loss: bool = True,
                    args: dict | None = None, eval_df=None, verbose: bool = True, **kwargs):
        """Fine-tune on `train_df` (a DataFrame with text and labels, or text_a, text_b and labels; or a
        labelled file). `kwargs`: metric functions `name=fn(labels, predictions)` for the evaluations during
        training. Returns (global_step, mean training loss), or (global_step, the evaluation scores dict of
        lists) when evaluating during training; `self.training_details` keeps the per-step history."""
        apply_args(self.args, args, self._warned)
        self.precision = precision.for_args(self.device, self.args)  # args may change mixed_precision or fp16
        if kwargs.pop("multi_label", False):
            raise ArgsError(_MULTI_LABEL)
        metric_fns = _metric_fns(kwargs)
        out = Path(output_dir or self.args.output_dir)
        if self.args.evaluate_during_training and eval_df is None:
            raise ArgsError("evaluate_during_training is on but no eval_df was given to train_model")
        rows = read_labelled(train_df, self.args, "train_df")
        eval_rows = read_labelled(eval_df, self.args, "eval_df") if eval_df is not None else None
        if not self.args.regression and len({repr(v) for v in rows.labels}) < 2:
            raise ArgsError(f"{rows.where}: every row has the label {rows.labels[0]!r}: one class only, nothing to "
                            "learn")
        labels = self._labels_for(rows)
        labels_map = self.args.labels_map or {label: i for i, label in enumerate(labels)}
        ids = label_ids(rows, labels_map, self.args.regression)
        eval_ids = label_ids(eval_rows, labels_map, self.args.regression) if eval_rows else None
        self._use_labels(labels)
        resume = self._find_resume(out)
        if not self.args.no_save and out.exists() and any(out.iterdir()) and not self.args.overwrite_output_dir \
                and resume is None:
            raise ArgsError(f"output_dir {out} already exists and is not empty: set overwrite_output_dir=True to "
                            "train into it, or choose another output_dir")
        features = self._features(rows, ids)
        evaluate_now = None
        if eval_rows is not None:
            eval_features = self._features(eval_rows, eval_ids)
            evaluate_now = lambda: self._during_training(eval_features, eval_rows, metric_fns)  # noqa: E731
        with run_tracker(self.args, self.tracker) as tracker, quiet_engine(self.args.silent):
            state = self._fit(features, out, resume, tracker, evaluate_now)
        self.training_details = training_details(state)
        return training_result(state, self.args, out)

    def _fit(self, features, out: Path, resume, tracker, evaluate_now):
        if dist.is_main():
            if not self.args.no_save:
                out.mkdir(parents=True, exist_ok=True)
            tracker.log_params({"model_type": self.model_type, "num_labels": self.num_labels,
                                "train_examples": len(features), "train_tokens": features.num_tokens})
        # Batches are drawn at random, not grouped by length: a label often goes with a length (a plot summary is
        # long, a review snippet short), and length-grouped batches of one class learned worse here.
        setup = TrainSetup(
            model=self._training_module(), objective=self._objective(), features=features, args=self.args,
            device=self.device, pad_id=padding_id(self.tokenizer), output_dir=out, save_model=self._save_to,
            tracker=tracker, precision=self.precision, resume=resume, evaluate=evaluate_now)
        state = fit(setup)
        self._resume_state = None
        if dist.is_main() and not self.args.no_save:
            atomic.write_into(out, self._save_to)
            log.info("Saved the fine-tuned classifier to %s (%d steps, %d examples)", out, state.step,
                     len(features))
        dist.barrier()
        return state

    def _features(self, rows: LabelledRows, ids: np.ndarray | None):
        features = encode(rows, self.tokenizer, self._max_length(), self._uses_token_types())
        features.labels = ids if ids is not None else np.zeros(len(rows), np.float32 if self.args.regression
                                                              else np.int64)
        return features

    def _max_length(self) -> int:
        limit = min(self.tokenizer.model_max_length, getattr(self.model.config, self.entry.positions_field, 1 << 30)
                    - self.entry.position_offset)
        if self.args.max_seq_length > limit:
            log.warning("max_seq_length %d is longer than the model's %d positions: using %d",
                        self.args.max_seq_length, limit, limit)
        return min(self.args.max_seq_length, limit)

    def _uses_token_types(self) -> bool:
        return getattr(self.model.config, "type_vocab_size", 1) > 1

    def _find_resume(self, out: Path) -> dict | None:
        return resume_state(self.args, out, self._resume_state, lambda folder: self.model.load_state_dict(
            type(self.model).from_pretrained(str(folder)).state_dict()))

    def _training_module(self) -> torch.nn.Module:
        return SequenceClassifierForTraining(self.model, self.args.regression, self.weight)

    def _objective(self) -> ClassificationObjective:
        return ClassificationObjective(self.num_labels, self.args.regression, self.weight)

    # ---- evaluation and prediction ----------------------------------------------------------------------------
    def eval_model(self, eval_df, output_dir: str | None = None, verbose: bool = True, silent: bool = False,
                   **kwargs):
        """Score `eval_df`. Returns (result, model_outputs, wrong_predictions): result holds eval_loss and mcc,
        accuracy, f1 (macro) (binary: also tp, tn, fp, fn; regression: pearson, spearman, eval_loss the mean
        squared error) and one entry per metric function `name=fn(labels, predictions)`; model_outputs the
        logits (n, num_labels) (regression: the predictions (n,)); wrong_predictions the InputExamples (text_a,
        text_b, label) predicted wrongly. Writes eval_results.txt into `output_dir` (unless no_save)."""
        kwargs.pop("multi_label", None), kwargs.pop("wandb_log", None)
        metric_fns = _metric_fns(kwargs)
        rows = read_labelled(eval_df, self.args, "eval_df")
        if not self._labels_fixed:
            self._use_labels(self._labels_for(rows))
        ids = label_ids(rows, self.args.labels_map, self.args.regression)
        with quiet_engine(silent or self.args.silent):
            result, outputs, wrong = self._score(self._features(rows, ids), rows, metric_fns)
        self.results.update(result)
        report_evaluation(self.args, result, output_dir, verbose)
        return result, outputs, wrong

    def _during_training(self, features, rows, metric_fns) -> dict:
        with quiet_engine(self.args.evaluate_during_training_silent):
            return self._score(features, rows, metric_fns)[0]

    def _score(self, features, rows: LabelledRows | None, metric_fns: dict):
        """(result, model outputs in row order, wrong predictions) over `features` (every process scores its
        share of the batches; the outputs are gathered)."""
        objective = self._objective()
        objective.collected = []
        result = evaluate(self._training_module(), objective, features, self.args.eval_batch_size,
                          padding_id(self.tokenizer), self.device, self.args.seed, self.precision)
        outputs = _gathered(objective.collected, len(features))
        if rows is None:
            return result, outputs, []
        if self.args.regression:
            outputs = outputs[:, 0]
            predictions, wrong = outputs, []
            result["spearman"] = spearman(outputs, features.labels)
        else:
            predictions = outputs.argmax(1)
            wrong = rows.examples(np.nonzero(predictions != features.labels)[0])
        for name, fn in metric_fns.items():
            result[name] = fn(features.labels, predictions)
        return result, outputs, wrong

    def predict(self, to_predict: list):
        """Labels for `to_predict` (texts, or [text_a, text_b] pairs). Returns (predictions: the labels as
        labels_list names them, or the predicted values with regression; raw_outputs: the logits (n,
        num_labels))."""
        if isinstance(to_predict, str):
            raise ArgsError("predict takes a list of texts (or of [text_a, text_b] pairs), not one string")
        pairs = bool(to_predict) and all(isinstance(t, (list, tuple)) and len(t) == 2 for t in to_predict)
        rows = LabelledRows("to_predict", [str(t[0]) if pairs else str(t) for t in to_predict],
                            [str(t[1]) for t in to_predict] if pairs else None, None)
        with quiet_engine(True):
            _, outputs, _ = self._score(self._features(rows, None), None, {})
        if self.args.regression:
            return outputs[:, 0], outputs
        ids = outputs.argmax(1)
        labels = self.args.labels_list
        if not labels or list(labels) == list(range(len(labels))):
            return ids, outputs
        return [labels[i] for i in ids], outputs

    # ---- saving -----------------------------------------------------------------------------------------------
    def _save_to(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.args.labels_list and not self.args.regression:
            self.model.config.id2label = {i: str(label) for i, label in enumerate(self.args.labels_list)}
            self.model.config.label2id = {str(label): i for i, label in enumerate(self.args.labels_list)}
        with console.no_library_progress_bars():
            self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        self.args.save(str(folder))

    def save_model(self, output_dir: str | None = None, optimizer=None, scheduler=None, model=None,
                   results: dict | None = None) -> None:
        """Write the classifier, tokenizer and model_args.json into `output_dir` (and eval_results.txt)."""
        if not dist.is_main() or self.args.no_save:
            return

        def write(tmp: Path) -> None:
            self._save_to(tmp)
            if results:
                write_results(tmp / "eval_results.txt", results)

        atomic.write_into(Path(output_dir or self.args.output_dir), write)


_MULTI_LABEL = ("multi-label classification (Simple Transformers' MultiLabelClassificationModel: one sigmoid per "
                "label, thresholded, scored per label) is not provided; give one label per row")


def _metric_fns(kwargs: dict) -> dict:
    bad = [k for k, v in kwargs.items() if not callable(v)]
    if bad:
        raise ArgsError(f"extra keyword arguments are metric functions name=fn(labels, predictions); "
                        f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not callable")
    return kwargs


def _gathered(collected: list, n: int) -> np.ndarray:
    """Every process's (example numbers, logits) put together in example order."""
    if dist.world() > 1:
        parts = [None] * dist.world()
        torch.distributed.all_gather_object(parts, collected)
        collected = [piece for part in parts for piece in part]
    if not collected:
        return np.zeros((0, 1), np.float32)
    index = np.concatenate([i for i, _ in collected])
    logits = np.concatenate([o for _, o in collected])
    out = np.empty((n, logits.shape[1]), dtype=np.float32)
    out[index] = logits
    return out


def load_classifier(entry, source: EncoderSource, num_labels: int, args: ClassificationArgs):
    """(classifier, tokenizer): the encoder of `source` with a fresh head of `num_labels`, or (random_init) the
    same architecture initialised from the seed. Raises ArgsError for a folder with no model or no encoder."""
    path = source.path
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ArgsError(f"{path}: holds no model (no config.json; {', '.join(sorted(os.listdir(path))[:6])}): give "
                        "the output folder of a pretraining run or a saved model")
    config = from_pretrained(hf.AutoConfig, path, what="model")
    if config.model_type != entry.config_cls.model_type:
        raise ArgsError(f"{path}: holds a {config.model_type!r} model, but model_type is {entry.name!r} (expects "
                        f"{entry.config_cls.model_type!r})")
    apply_config_overrides(config, args.config, "args.config")
    config.num_labels = num_labels
    tokenizer = load_tokenizer(args.tokenizer_name or source.tokenizer)
    if getattr(config, "pad_token_id", None) is None:  # GPT-2 finds each text's last token by the padding id
        config.pad_token_id = padding_id(tokenizer)
    if args.random_init:
        model = entry.classifier_cls(config)
        log.info("%s: random initialisation (seed %d) of its %s architecture and tokenizer: %.2fM parameters",
                 path, args.seed, entry.name, millions(model))
    else:
        model, missing, unexpected = _pretrained(entry, source, config)
        _check_encoder(model, missing, unexpected, path, num_labels)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def _pretrained(entry, source: EncoderSource, config):
    if source.encoder is not None:
        model = entry.classifier_cls(config)
        missing, unexpected = model.load_state_dict(source.encoder.state_dict(), strict=False)
        return model, list(missing), list(unexpected)
    try:
        model, info = from_pretrained(entry.classifier_cls, source.path, config=config, output_loading_info=True)
    except OSError as e:
        raise ArgsError(f"{source.path}: has a config but no model weights that load ({e})") from None
    return model, list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))


def _check_encoder(model, missing: list, unexpected: list, path: str, num_labels: int) -> None:
    """An error when the checkpoint lacks the encoder itself (a head, or a pooler an MLM run never trains, may
    be fresh); one info line naming the fresh head and what was dropped."""
    prefix = model.base_model_prefix + "."
    encoder = [k for k in missing if k.startswith(prefix) and ".pooler." not in k and not k.endswith("position_ids")]
    if encoder:
        raise ArgsError(f"{path}: holds no {model.config.model_type} encoder: {len(encoder)} of its weights are "
                        f"missing ({', '.join(encoder[:3])}, ...)")
    fresh = sorted({k.rsplit(".", 1)[0] for k in missing})
    dropped = sorted({k.split(".")[0] for k in unexpected})
    log.info("%s: encoder loaded (%.2fM parameters); fresh %s for %d label%s%s", path, millions(model),
             ", ".join(fresh) or "nothing", num_labels, "" if num_labels == 1 else "s",
             f"; not used: {', '.join(dropped)}" if dropped else "")


def _initial_args(model_name, args) -> ClassificationArgs:
    """A saved classifier's settings (its model_args.json, when it was written by a ClassificationModel), then
    `args` over them. A pretraining run's settings are never taken over: they are for another objective."""
    if args is not None and not isinstance(args, (dict, ClassificationArgs)):
        raise ArgsError(f"args must be a ClassificationArgs or a dict, not {type(args).__name__}")
    saved = {}
    if model_name and _saved_class(model_name) == "ClassificationModel":
        values = ClassificationArgs.saved_values(model_name)
        saved = {k: v for k, v in values.items() if k not in NOT_RESTORED and k != "random_init"}
    base = ClassificationArgs().update_from_dict(saved)
    if isinstance(args, ClassificationArgs):
        return base.update_from_dict(args.changed())
    return base.update_from_dict(args or {})


def _saved_class(folder: str) -> str | None:
    """The model_class recorded in `folder/model_args.json` (None when there is none or it does not read)."""
    try:
        with open(os.path.join(folder, "model_args.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved.get("model_class") if isinstance(saved, dict) else None
