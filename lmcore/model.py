"""`LanguageModelingModel`: the front door (the Simple Transformers language-modeling API), built on the rooms
beside it: args, registry, tokenizer, data, objectives, train, evaluate, checkpoint."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from .base import atomic
from .models import compat
from .training import checkpoint, console, dist, hardware, precision, tracking
from .models.args import ArgsError, LanguageModelingArgs
from .data.corpus import resolve_files
from .data.features import features_for
from .training.evaluate import evaluate
from .objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR
from .models.families import family_of, requested_block
from .models.registry import MODEL_TYPES, ModelType, get_model_type
from .data.tokenizer import add_special_tokens_list, load_tokenizer, padding_id, train_tokenizer, train_tokenizer_into
from .training.tracking import NullTracker
from .generate import GenerationArgs, generate_text
from .training.train import TrainSetup, fit, write_results

log = logging.getLogger(__name__)


class LanguageModelingModel:
    """A language model to train (from scratch or from a saved model) and evaluate.

    Attributes, as in Simple Transformers: `model` (the PyTorch module), `tokenizer`, `args`
    (LanguageModelingArgs), `device`; and `precision` (lmcore.training.precision.Precision: what it computes in there).
    """

    def __init__(self, model_type: str, model_name: str | None, generator_name: str | None = None,
                 discriminator_name: str | None = None, train_files=None,
                 args: LanguageModelingArgs | dict | None = None, use_cuda: bool = True, retrieval_model=None,
                 adapter_name: str | None = None, cuda_device: int = -1, tracker=None, **kwargs):
        """`model_type` (bert, camembert, distilbert, electra, gpt2, longformer, openai-gpt, roberta) and
        `model_name`: None to train from scratch (then `train_files` trains the tokenizer), a saved model folder
        (its model_args.json is read; `args` override it), a checkpoint (training continues from it), or a hub
        name found in the local Hugging Face cache. ELECTRA from separate models: `model_name="electra"` with
        `generator_name` / `discriminator_name`. `tracker` receives params and per-step metrics."""
        console.show_progress()
        self.args = _initial_args(model_name, args)
        self.model_type = model_type
        self.tracker = tracker or NullTracker()
        self.results: dict = {}
        self.training_details: dict = {}
        self._resume_state: dict | None = None
        self._warned: set = set()
        if retrieval_model is not None or adapter_name is not None:
            raise ArgsError("retrieval_model / adapter_name: retrieval-augmented training and PEFT adapters are not "
                            "provided here")
        _warn_unused(kwargs, "LanguageModelingModel()")
        compat.warn_inert(self.args, self._warned)
        self._check(model_type, model_name, train_files, generator_name, discriminator_name)
        self.entry: ModelType = get_model_type(model_type)  # the registry entry of model_type
        self.family = family_of(self.entry)
        _check_local_rank(self.args.local_rank)
        if self.args.local_rank != -1 and cuda_device == -1:
            cuda_device = self.args.local_rank
        self.device = self._pick_device(use_cuda, cuda_device)
        self.precision = precision.for_args(self.device, self.args)
        dist.init(use_cuda)
        dist.set_threads(self.args.thread_count)
        self.args.model_name, self.args.model_type = model_name, model_type
        _seed_everything(self.args.seed)
        if model_name is None and not (generator_name or discriminator_name):
            built = self.family.from_scratch(self.entry, self.args, lambda n: self._scratch_tokenizer(train_files, n))
        else:
            built = self.family.load(self.entry, self.args, model_name, generator_name, discriminator_name,
                                     lambda n: self._scratch_tokenizer(train_files, n))
        self.model, self.tokenizer, self.config = built.model, built.tokenizer, built.config
        if built.resume_from:
            self._resume_state = checkpoint.load_state(built.resume_from)
            log.info("%s is a checkpoint: train_model continues from step %d", built.resume_from,
                     self._resume_state["step"])
        self._add_special_tokens()
        # Models start identical on every rank (seeded above); dropout then differs per rank.
        _seed_everything(self.args.seed + dist.rank())
        self.attention = hardware.choose_attention(self.model, self.precision)
        hardware.fuse_activations(self.model)
        self.model.to(self.device)

    # ---- construction -----------------------------------------------------------------------------------------
    def _check(self, model_type, model_name, train_files, generator_name, discriminator_name) -> None:
        problems = self.args.problems()
        entry = MODEL_TYPES.get(model_type)
        if entry is None:
            problems.append(f"unknown model_type {model_type!r}: choose one of {', '.join(sorted(MODEL_TYPES))}")
        else:
            problems += family_of(entry).problems(entry, self.args)
        scratch = model_name is None and not (generator_name or discriminator_name)
        if scratch and train_files is None and not self.args.tokenizer_name:
            problems.append("training from scratch (model_name=None) needs train_files to train a tokenizer on "
                            "(or args.tokenizer_name)")
        if problems:
            raise ArgsError("invalid settings:\n  " + "\n  ".join(problems))

    def _pick_device(self, use_cuda: bool, cuda_device: int) -> torch.device:
        if use_cuda and torch.cuda.is_available():
            index = cuda_device if cuda_device >= 0 else dist.local_rank()
            return torch.device("cuda", index)
        if use_cuda and int(os.environ.get("RANK", "0")) == 0:  # said once, not by every process
            log.info("CUDA is not available: training on the CPU")
        return torch.device("cpu")

    def _scratch_tokenizer(self, train_files, max_length: int):
        if self.args.tokenizer_name:
            tok = load_tokenizer(self.args.tokenizer_name)
        else:
            files = resolve_files(train_files, self.args.encoding, self.args.dataset_cache_dir)
            tok = None
            if dist.is_main():  # other ranks wait, then find the trained tokenizer in the cache
                tok = train_tokenizer(self.entry, files, self.args, max_length)
            dist.barrier()
            if tok is None:
                tok = train_tokenizer(self.entry, files, self.args, max_length)
        tok.model_max_length = max_length
        return tok

    def block_size(self) -> int:
        limit = self.tokenizer.model_max_length
        positions = getattr(self.config, self.entry.positions_field, None)
        if positions:
            limit = min(limit, positions - self.entry.position_offset)
        wanted = requested_block(self.args)
        if wanted > limit:
            log.warning("block size %d is longer than the model's %d positions: using %d", wanted, limit, limit)
        return min(wanted, limit)

    # ---- training ---------------------------------------------------------------------------------------------
    def train_model(self, train_file, output_dir: str | None = None, show_running_loss: bool = True,
                    args: dict | None = None, eval_file=None, verbose: bool = True, on_evaluation=None, **kwargs):
        """Train on `train_file` (a file, a directory or a list). `args` changes settings for good. Returns
        (global_step, mean training loss), or (global_step, the evaluation scores dict of lists) when evaluating
        during training, as Simple Transformers does; `self.training_details` keeps the per-step history.
        `on_evaluation(step, results)`: called after each evaluation during training (main process); a non-empty
        answer stops training there, as its reason (`training_details["stopped_by"]`); the model is saved as
        at any other end."""
        self._apply_args(args)
        _warn_unused(kwargs, "train_model()")
        out = Path(output_dir or self.args.output_dir)
        if self.args.evaluate_during_training and eval_file is None:
            raise ArgsError("evaluate_during_training is on but no eval_file was given to train_model")
        if self.args.use_early_stopping and not self.args.evaluate_during_training:
            log.warning("use_early_stopping acts on evaluations during training: set evaluate_during_training=True "
                        "(and pass eval_file), otherwise training runs to the end")
        files = resolve_files(train_file, self.args.encoding, self.args.dataset_cache_dir)
        eval_files = (resolve_files(eval_file, self.args.encoding, self.args.dataset_cache_dir)
                      if eval_file is not None else None)
        resume = self._find_resume(out)
        if not self.args.no_save:
            self._check_output_dir(out, resuming=resume is not None)
        with run_tracker(self.args, self.tracker) as tracker, self._quiet_when_silent():
            state = self._fit(files, eval_files, out, resume, tracker, on_evaluation)
        self.training_details = training_details(state)
        return training_result(state, self.args, out)

    def _fit(self, files, eval_files, out: Path, resume, tracker, on_evaluation=None):
        block = self.block_size()
        features = self._features(files, block, "train")
        eval_features = self._features(eval_files, block, "dev") if eval_files else None
        if dist.is_main():
            if not self.args.no_save:
                out.mkdir(parents=True, exist_ok=True)
            tracker.log_params({"model_type": self.model_type, "block_size": block,
                                "train_examples": len(features), "train_tokens": features.num_tokens})
        setup = TrainSetup(
            model=self._training_module(), objective=self._objective(), features=features, args=self.args,
            device=self.device, pad_id=padding_id(self.tokenizer), output_dir=out, save_model=self._save_to,
            tracker=tracker, precision=self.precision, resume=resume,
            group_by_length=self.args.dataset_kind == "line_by_line",
            evaluate=(lambda: self._evaluate_during_training(eval_features)) if eval_features is not None else None,
            on_evaluation=on_evaluation)
        state = fit(setup)
        self._resume_state = None
        if dist.is_main() and not self.args.no_save:
            atomic.write_into(out, self._save_to)
            log.info("Saved the trained model to %s (%d steps, %d tokens). %s", out, state.step, state.tokens_seen,
                     checkpoint.disk_summary(out, self.args))
        dist.barrier()
        return state

    def _apply_args(self, args: dict | None) -> None:
        apply_args(self.args, args, self._warned)
        # The one other place precision is resolved: train_model(args=...) may change mixed_precision or fp16.
        self.precision = precision.for_args(self.device, self.args)

    def _quiet_when_silent(self, silent: bool = False):
        """`silent`: only warnings and errors from the engine while this runs."""
        return quiet_engine(silent or self.args.silent)

    def _find_resume(self, out: Path) -> dict | None:
        def load(folder: Path) -> None:
            self.family.load_weights(self.model, folder)
            self._checkpoint_tokenizer(folder)

        return resume_state(self.args, out, self._resume_state, load)

    def _checkpoint_tokenizer(self, folder: Path) -> None:
        """Resume with the tokenizer the checkpoint's weights were trained with. A from-scratch model builds its
        tokenizer anew (from the cache, or trained again), and another lmcore version may number the same tokens
        otherwise (unigram pieces in sorted order since tokenizer version 2): resuming with those ids would train
        the checkpoint's embeddings on scrambled tokens."""
        if not (Path(folder) / "tokenizer_config.json").exists():
            return
        saved = load_tokenizer(str(folder))
        if saved.get_vocab() != self.tokenizer.get_vocab():
            log.warning("%s was trained with a tokenizer that numbers its tokens otherwise than the one built now: "
                        "resuming with the checkpoint's own", folder)
            saved.model_max_length = self.tokenizer.model_max_length
            self.tokenizer = saved

    def _check_output_dir(self, out: Path, resuming: bool) -> None:
        if out.exists() and any(out.iterdir()) and not self.args.overwrite_output_dir and not resuming:
            raise ArgsError(f"output_dir {out} already exists and is not empty: set overwrite_output_dir=True "
                            "to train into it, or choose another output_dir")

    def _features(self, files, block: int, mode: str = "train"):
        """Rank 0 builds (or finds) the features, the other ranks then open the same cache."""
        features = features_for(files, self.tokenizer, self.args, block, build=True, mode=mode) \
            if dist.is_main() else None
        dist.barrier()
        if features is None:
            features = features_for(files, self.tokenizer, self.args, block, build=False, mode=mode)
        return features

    def _training_module(self) -> torch.nn.Module:
        """The module training and evaluation call (the one DistributedDataParallel wraps)."""
        return self.family.training_module(self.entry, self.args, self.model)

    def _objective(self):
        return self.family.objective(self.args, self.tokenizer)

    # ---- evaluation -------------------------------------------------------------------------------------------
    def eval_model(self, eval_file, output_dir: str | None = None, verbose: bool = True, silent: bool = False,
                   **kwargs) -> dict:
        """Evaluate on `eval_file`; returns eval_loss and perplexity (= exp(eval_loss), token-weighted) and
        writes eval_results.txt into `output_dir` (unless no_save)."""
        _warn_unused(kwargs, "eval_model()")
        files = resolve_files(eval_file, self.args.encoding, self.args.dataset_cache_dir)
        with self._quiet_when_silent(silent):
            features = self._features(files, self.block_size(), "dev")
            result = self._evaluate_features(features)
        self.results.update(result)
        report_evaluation(self.args, result, output_dir, verbose)
        return result

    def _evaluate_during_training(self, features) -> dict:
        with self._quiet_when_silent(self.args.evaluate_during_training_silent):
            return self._evaluate_features(features)

    def _evaluate_features(self, features) -> dict:
        return evaluate(self._training_module(), self._objective(), features, self.args.eval_batch_size,
                        padding_id(self.tokenizer), self.device, self.args.seed, self.precision)

    # ---- saving -----------------------------------------------------------------------------------------------
    def _save_to(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with console.no_library_progress_bars():
            self.family.save(self.model, self.tokenizer, folder)
        self.args.save(str(folder))

    def save_generator(self, output_dir: str | None = None) -> str:
        """ELECTRA: write the generator as a standalone model to `output_dir/generator_model/`."""
        return self._save_one(GENERATOR_DIR, output_dir)

    def save_discriminator(self, output_dir: str | None = None) -> str:
        """ELECTRA: write the discriminator as a standalone model to `output_dir/discriminator_model/` (the one
        to fine-tune for downstream tasks)."""
        return self._save_one(DISCRIMINATOR_DIR, output_dir)

    def _save_one(self, which: str, output_dir: str | None) -> str:
        if which not in self.family.parts():
            raise ArgsError(f"save_{which.split('_')[0]}() is for ELECTRA models; this is {self.model_type!r}")
        out = Path(output_dir or self.args.output_dir)
        if dist.is_main() and not self.args.no_save:
            with console.no_library_progress_bars():
                atomic.write_into(out, lambda tmp: self.family.save(self.model, self.tokenizer, tmp, which=(which,)))
        return str(out / which)


    def save_model(self, output_dir: str | None = None, optimizer=None, scheduler=None, model=None,
                   results: dict | None = None) -> None:
        """Write the model, tokenizer and model_args.json into `output_dir` (default args.output_dir), plus the
        optimizer's state (`optimizer.pt`, with save_optimizer_and_scheduler) and eval_results.txt when given.
        `model` and `scheduler` are accepted for Simple Transformers scripts: the model saved is always this one,
        and schedules here are a function of the step with no state to save."""
        if not dist.is_main() or self.args.no_save:
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            self._save_to(tmp)
            if optimizer is not None and self.args.save_optimizer_and_scheduler:
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            if results:
                write_results(tmp / "eval_results.txt", results)

        atomic.write_into(out, write)

    def save_model_args(self, output_dir: str) -> None:
        """Write model_args.json (every setting but `not_saved_args`) into `output_dir`."""
        if dist.is_main():
            self.args.save(output_dir)

    def get_named_parameters(self) -> list[str]:
        """Names of the model's parameters, as custom_parameter_groups expects them."""
        return [name for name, _ in self.model.named_parameters()]

    # ---- tokenizer and generation -------------------------------------------------------------------------------
    def train_tokenizer(self, train_files, tokenizer_name: str | None = None, output_dir: str | None = None,
                        use_trained_tokenizer: bool = True) -> str:
        """Train a tokenizer of this model type's kind on `train_files` (args.vocab_size, min_frequency, ...) and
        save it into `output_dir` (default args.output_dir). With `use_trained_tokenizer` the model switches to
        it (args.tokenizer_name points there and the embeddings are resized). Returns the folder."""
        out = str(output_dir or self.args.output_dir)
        files = resolve_files(train_files, self.args.encoding, self.args.dataset_cache_dir)
        tok = train_tokenizer_into(self.entry, files, self.args, self.tokenizer.model_max_length, out)
        log.info("Trained the %s tokenizer%s: %d tokens, saved to %s", self.model_type,
                 f" {tokenizer_name}" if tokenizer_name else "", len(tok), out)
        if use_trained_tokenizer:
            self.tokenizer = tok
            self.args.tokenizer_name = out
            self._resize_embeddings()
        return out

    def _add_special_tokens(self) -> None:
        if self.args.special_tokens_list:
            if add_special_tokens_list(self.tokenizer, self.args.special_tokens_list):
                self._resize_embeddings()

    def _resize_embeddings(self) -> None:
        for m in self.family.embedding_models(self.model):
            if m.get_input_embeddings().num_embeddings != len(self.tokenizer):
                m.resize_token_embeddings(len(self.tokenizer))
        self.family.retie(self.model)

    def predict(self, to_predict, generation_args: GenerationArgs | None = None, **kwargs):
        """Continue each text of `to_predict` with a causal model (gpt2, openai-gpt). Returns (the generated
        texts, the raw outputs of `generate` per batch); `kwargs` go to `generate`."""
        if not self.family.generates_text(self.entry, self.args):
            raise ArgsError(f"predict generates text and needs a causal language model (gpt2, openai-gpt with "
                            f"mlm=False); this is {self.model_type!r} with mlm={self.args.mlm}")
        return generate_text(self.model, self.tokenizer, to_predict, generation_args or GenerationArgs(),
                             self.args.eval_batch_size, self.device, self.args.skip_special_tokens, **kwargs)


NOT_RESTORED = ("output_dir", "best_model_dir", "overwrite_output_dir", "resume_from_checkpoint", "tokenizer_name",
                "config_name", "model_name", "model_type", "cache_dir", "local_rank", "tensorboard_dir", "no_save",
                "dataset_cache_dir")
"""Settings of a saved model_args.json that are not restored on loading: where the earlier run wrote and what it
was built from. Reloading `outputs/` must not train back into `outputs/` unless asked to."""


def _initial_args(model_name, args) -> LanguageModelingArgs:
    """The settings of a new model: a saved folder's model_args.json (if `model_name` is one), then `args` over
    it (a dict, or the fields of a LanguageModelingArgs that differ from the defaults)."""
    if args is not None and not isinstance(args, (dict, LanguageModelingArgs)):
        raise ArgsError(f"args must be a LanguageModelingArgs or a dict, not {type(args).__name__}")
    saved = {}
    if model_name and model_name != "electra" and os.path.isdir(model_name):
        saved = {k: v for k, v in LanguageModelingArgs.saved_values(model_name).items() if k not in NOT_RESTORED}
    if not saved:
        return LanguageModelingArgs.from_any(args)
    base = LanguageModelingArgs().update_from_dict(saved)
    if isinstance(args, LanguageModelingArgs):
        return base.update_from_dict(args.changed())
    return base.update_from_dict(args or {})


def _warn_unused(kwargs: dict, where: str) -> None:
    if kwargs:
        log.warning("%s: ignoring keyword argument(s) this engine does not use: %s", where, ", ".join(sorted(kwargs)))


def _check_local_rank(local_rank: int) -> None:
    """`local_rank` comes from a launcher's --local_rank; the launcher also sets LOCAL_RANK, which the engine
    uses to join the process group. A local_rank with no launcher around it cannot work."""
    if local_rank == -1:
        return
    env = os.environ.get("LOCAL_RANK")
    if env is None:
        raise ArgsError(f"local_rank={local_rank} but this process was not started by a distributed launcher "
                        "(no LOCAL_RANK in the environment): start it with torchrun or python -m "
                        "torch.distributed.launch, or leave local_rank at -1")
    if int(env) != local_rank:
        raise ArgsError(f"local_rank={local_rank} but the launcher says LOCAL_RANK={env}")


@contextlib.contextmanager
def run_tracker(args, tracker):
    """`tracker` for one training run, with TensorBoard beside it when `args.tensorboard_dir` asks (closed after)."""
    run = tracking.tracker_for(args, tracker)
    try:
        yield run
    finally:
        if run is not tracker and hasattr(run, "close"):
            run.close()


def apply_args(settings, changes, warned: set) -> None:
    """`train_model(args=...)`: set `changes` (a dict or a settings object) on `settings` for good, check them,
    warn once about inert ones."""
    if not changes:
        return
    settings.update_from_dict(changes.to_dict() if isinstance(changes, type(settings)) else changes)
    problems = settings.problems()
    if problems:
        raise ArgsError("invalid settings:\n  " + "\n  ".join(problems))
    compat.warn_inert(settings, warned)


def resume_state(args, out: Path, pending: dict | None, load_weights) -> dict | None:
    """What train_model continues from: the checkpoint `args.resume_from_checkpoint` names ("latest": the newest
    complete one in `out`, or a fresh start when there is none yet), its weights loaded by `load_weights(folder)`;
    without the setting, `pending` (the state of a checkpoint the model was built from, if any)."""
    wanted = args.resume_from_checkpoint
    if not wanted:
        return pending
    folder = checkpoint.latest(out) if wanted == "latest" else Path(wanted)
    if folder is None:
        log.info("resume_from_checkpoint='latest': no complete checkpoint in %s, starting fresh", out)
        return None
    if not checkpoint.is_checkpoint(folder):
        raise ArgsError(f"resume_from_checkpoint={wanted!r}: {folder} is not a complete checkpoint")
    load_weights(folder)
    log.info("Resuming from %s", folder)
    return checkpoint.load_state(folder)


@contextlib.contextmanager
def quiet_engine(silent: bool):
    """With `silent`, only warnings and errors from the engine while the block runs."""
    engine = logging.getLogger("lmcore")
    level = engine.level
    if silent:
        engine.setLevel(logging.WARNING)
    try:
        yield
    finally:
        engine.setLevel(level)


def report_evaluation(args, result: dict, output_dir: str | None, verbose: bool) -> None:
    """On rank 0: `eval_results.txt` into `output_dir` (default args.output_dir; not with no_save) and, when
    `verbose`, one log line of the results."""
    if not dist.is_main():
        return
    if not args.no_save:
        out = Path(output_dir or args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_results(out / "eval_results.txt", result)
    if verbose:
        log.info("Evaluation: %s", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in result.items()))


def training_details(state) -> dict:
    """The per-step history of a finished `fit` (a front door's `training_details`)."""
    return {"global_step": state.step, "train_loss": state.train_loss, "learning_rate": state.learning_rate,
            "eval_history": state.eval_history, "tokens_seen": state.tokens_seen, "stopped_early": state.stopped_early,
            "stopped_by": state.stopped_by, "compiled": state.compiled,
            "compile_warmup_s": state.compile_warmup_s}


def training_result(state, args, out: Path) -> tuple:
    """What `train_model` returns, as Simple Transformers does: (global_step, mean training loss), or
    (global_step, the evaluation scores dict of lists) when evaluating during training (also written to
    `training_progress_scores.csv`)."""
    if args.evaluate_during_training:
        scores = progress_scores(state.eval_history)
        if dist.is_main() and not args.no_save:
            _write_csv(out / "training_progress_scores.csv", scores)
        return state.step, scores
    return state.step, sum(state.train_loss) / len(state.train_loss) if state.train_loss else float("nan")


def progress_scores(history: list[dict]) -> dict:
    """Evaluation history as Simple Transformers returns it: one list per name (global_step, train_loss,
    eval_loss, perplexity, ...), one entry per evaluation."""
    names: list[str] = []
    for entry in history:
        names += [k for k in entry if k not in names]
    return {k: [entry.get(k) for entry in history] for k in names}


def _write_csv(path: Path, scores: dict) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(scores))
    writer.writerows(zip(*scores.values()))
    atomic.write_text(path, buf.getvalue())

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
