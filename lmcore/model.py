"""`LanguageModelingModel`: the front door (the Simple Transformers language-modeling API), built on the rooms
beside it: args, registry, tokenizer, data, objectives, train, evaluate, checkpoint."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
import transformers as hf

from . import atomic, checkpoint, dist, electra, hardware
from .args import ArgsError, LanguageModelingArgs
from .corpus import resolve_files
from .data import load_features
from .evaluate import evaluate
from .hub import from_pretrained
from .objectives import LanguageModelForTraining, LanguageModelObjective
from .registry import MODEL_TYPES, ModelType, get_model_type
from .tokenizer import load_tokenizer, padding_id, train_tokenizer
from .tracking import NullTracker
from .train import TrainSetup, fit

log = logging.getLogger(__name__)


class LanguageModelingModel:
    """A language model to train (from scratch or from a saved model) and evaluate.

    Attributes, as in Simple Transformers: `model` (the PyTorch module), `tokenizer`, `args`
    (LanguageModelingArgs), `device`.
    """

    def __init__(self, model_type: str, model_name: str | None, args: LanguageModelingArgs | dict | None = None,
                 train_files=None, generator_name: str | None = None, discriminator_name: str | None = None,
                 use_cuda: bool = True, cuda_device: int = -1, tracker=None, **kwargs):
        self.args = LanguageModelingArgs.from_any(args)
        self.model_type = model_type
        self.tracker = tracker or NullTracker()
        self._resume_state: dict | None = None
        self._check(model_type, model_name, train_files, generator_name, discriminator_name)
        self.spec: ModelType = get_model_type(model_type)
        self.device = self._pick_device(use_cuda, cuda_device)
        dist.init(use_cuda)
        _seed_everything(self.args.seed)
        if model_type == "electra":
            electra.init_electra(self, model_name, train_files, generator_name, discriminator_name)
        elif model_name is None:
            self._init_from_scratch(train_files)
        else:
            self._init_pretrained(model_name)
        # Models start identical on every rank (seeded above); dropout then differs per rank.
        _seed_everything(self.args.seed + dist.rank())
        hardware.choose_attention(self.model, self.device)
        hardware.fuse_activations(self.model)
        self.model.to(self.device)

    # ---- construction -----------------------------------------------------------------------------------------
    def _check(self, model_type, model_name, train_files, generator_name, discriminator_name) -> None:
        problems = self.args.problems()
        spec = MODEL_TYPES.get(model_type)
        if spec is None:
            problems.append(f"unknown model_type {model_type!r}: choose one of {', '.join(sorted(MODEL_TYPES))}")
        elif model_type != "electra":
            if self.args.mlm and spec.mlm_cls is None:
                problems.append(f"model_type {model_type!r} is a causal language model: set mlm=False")
            if not self.args.mlm and spec.clm_cls is None:
                problems.append(f"model_type {model_type!r} is a masked language model: set mlm=True "
                                "(mlm=False is for gpt2 and openai-gpt)")
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
        if use_cuda:
            log.info("CUDA is not available: training on the CPU")
        return torch.device("cpu")

    def _init_from_scratch(self, train_files) -> None:
        spec = self.spec
        config = (from_pretrained(hf.AutoConfig, self.args.config_name, what="config")
                  if self.args.config_name else spec.config_cls())
        _apply_config_overrides(config, self.args.config, "args.config")
        max_length = self._max_length(config, requested=self._requested_block())
        self.tokenizer = self._scratch_tokenizer(train_files, max_length)
        _fit_config_to_tokenizer(config, self.tokenizer)
        self.config = config
        self.model = spec.model_cls(self.args.mlm)(config)
        log.info("Initialised a %s model from scratch: %.2fM parameters, vocabulary %d", spec.name,
                 _millions(self.model), len(self.tokenizer))

    def _scratch_tokenizer(self, train_files, max_length: int):
        if self.args.tokenizer_name:
            tok = load_tokenizer(self.args.tokenizer_name)
        else:
            files = resolve_files(train_files)
            tok = None
            if dist.is_main():  # other ranks wait, then find the trained tokenizer in the cache
                tok = train_tokenizer(self.spec, files, self.args, max_length)
            dist.barrier()
            if tok is None:
                tok = train_tokenizer(self.spec, files, self.args, max_length)
        tok.model_max_length = max_length
        return tok

    def _init_pretrained(self, model_name: str) -> None:
        config = from_pretrained(hf.AutoConfig, model_name, what="model")
        expected = self.spec.config_cls.model_type
        if config.model_type != expected:
            raise ArgsError(f"{model_name}: holds a {config.model_type!r} model, but model_type is "
                            f"{self.spec.name!r} (expects {expected!r})")
        _apply_config_overrides(config, self.args.config, "args.config")
        cls = self.spec.model_cls(self.args.mlm)
        self.model, info = from_pretrained(cls, model_name, config=config, output_loading_info=True)
        fresh = sorted(set(info.get("missing_keys", [])))
        if fresh:
            log.warning("%s: %d weight(s) not in the checkpoint were freshly initialised (%s%s): expected when "
                        "starting from an encoder without an LM head", model_name, len(fresh),
                        ", ".join(fresh[:4]), ", ..." if len(fresh) > 4 else "")
        self.tokenizer = load_tokenizer(self.args.tokenizer_name or model_name)
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            self.model.resize_token_embeddings(len(self.tokenizer))
        self.config = self.model.config
        self._maybe_resume_from(model_name)

    def _maybe_resume_from(self, folder: str) -> None:
        """A checkpoint passed as model_name: train_model continues from it (the Simple Transformers way)."""
        if checkpoint.is_checkpoint(folder):
            self._resume_state = checkpoint.load_state(folder)
            log.info("%s is a checkpoint: train_model continues from step %d", folder, self._resume_state["step"])

    def _requested_block(self) -> int:
        return self.args.block_size if self.args.block_size > 0 else self.args.max_seq_length

    def _max_length(self, config, requested: int) -> int:
        """Longest example the model can take; a from-scratch config grows its positions to fit `requested`."""
        field, offset = self.spec.positions_field, self.spec.position_offset
        if getattr(config, field) - offset < requested:
            setattr(config, field, requested + offset)
        return getattr(config, field) - offset

    def block_size(self) -> int:
        limit = self.tokenizer.model_max_length
        positions = getattr(self.config, self.spec.positions_field, None)
        if positions:
            limit = min(limit, positions - self.spec.position_offset)
        wanted = self._requested_block()
        if wanted > limit:
            log.warning("block size %d is longer than the model's %d positions: using %d", wanted, limit, limit)
        return min(wanted, limit)

    # ---- training ---------------------------------------------------------------------------------------------
    def train_model(self, train_file, output_dir: str | None = None, show_running_loss: bool = True,
                    args: dict | None = None, eval_file=None, verbose: bool = True, **kwargs):
        """Train on `train_file` (a file, a directory or a list). Returns (global_step, details): details holds
        the per-step `train_loss` and `learning_rate`, and `eval_history` when evaluating during training."""
        if args:
            self.args.update_from_dict(args)
            problems = self.args.problems()
            if problems:
                raise ArgsError("invalid settings:\n  " + "\n  ".join(problems))
        out = Path(output_dir or self.args.output_dir)
        if self.args.evaluate_during_training and eval_file is None:
            raise ArgsError("evaluate_during_training is on but no eval_file was given to train_model")
        files = resolve_files(train_file)
        eval_files = resolve_files(eval_file) if eval_file is not None else None
        resume = self._find_resume(out)
        self._check_output_dir(out, resuming=resume is not None)

        block = self.block_size()
        features = self._features(files, block)
        eval_features = self._features(eval_files, block) if eval_files else None
        if dist.is_main():
            out.mkdir(parents=True, exist_ok=True)
            self.tracker.log_params({"model_type": self.model_type, "block_size": block,
                                     "train_examples": len(features), "train_tokens": features.num_tokens})
        objective = self._objective()
        setup = TrainSetup(
            model=self._training_module(), objective=objective, features=features, args=self.args, device=self.device,
            pad_id=padding_id(self.tokenizer), output_dir=out, save_model=self._save_to, tracker=self.tracker,
            autocast=self._autocast, grad_scaler=hardware.needs_grad_scaler(self.device, self.args.mixed_precision),
            compute_dtype=str(hardware.autocast_dtype(self.device, self.args.mixed_precision) or torch.float32
                              ).split(".")[-1],
            resume=resume, group_by_length=self.args.dataset_type == "line_by_line",
            evaluate=(lambda: self._evaluate_features(eval_features)) if eval_features is not None else None)
        state = fit(setup)
        self._resume_state = None
        if dist.is_main():
            atomic.write_into(out, self._save_to)
            log.info("Saved the trained model to %s (%d steps, %d tokens)", out, state.step, state.tokens_seen)
        dist.barrier()
        details = {"global_step": state.step, "train_loss": state.train_loss,
                   "learning_rate": state.learning_rate, "eval_history": state.eval_history,
                   "tokens_seen": state.tokens_seen}
        return state.step, details

    def _find_resume(self, out: Path) -> dict | None:
        wanted = self.args.resume_from_checkpoint
        if wanted:
            folder = checkpoint.latest(out) if wanted == "latest" else Path(wanted)
            if folder is None:
                log.info("resume_from_checkpoint='latest': no complete checkpoint in %s, starting fresh", out)
                return None
            if not checkpoint.is_checkpoint(folder):
                raise ArgsError(f"resume_from_checkpoint={wanted!r}: {folder} is not a complete checkpoint")
            self._load_weights(folder)
            log.info("Resuming from %s", folder)
            return checkpoint.load_state(folder)
        return self._resume_state

    def _load_weights(self, folder: Path) -> None:
        """Replace the model's weights with those saved in `folder` (a checkpoint of this same model)."""
        if self.model_type == "electra":
            return electra.load_pair_weights(self.model, folder)
        fresh = type(self.model).from_pretrained(str(folder))
        self.model.load_state_dict(fresh.state_dict())

    def _check_output_dir(self, out: Path, resuming: bool) -> None:
        if out.exists() and any(out.iterdir()) and not self.args.overwrite_output_dir and not resuming:
            raise ArgsError(f"output_dir {out} already exists and is not empty: set overwrite_output_dir=True "
                            "to train into it, or choose another output_dir")

    def _features(self, files, block: int):
        common = dict(tokenizer=self.tokenizer, dataset_type=self.args.dataset_type, block_size=block,
                      cache_dir=self.args.cache_dir, reprocess=self.args.reprocess_input_data,
                      strict_utf8=self.args.strict_utf8)
        features = load_features(files, build=dist.is_main(), **common) if dist.is_main() else None
        dist.barrier()
        if features is None:
            features = load_features(files, build=False, **common)
        return features

    def _training_module(self) -> torch.nn.Module:
        """The module training and evaluation call: the ELECTRA pair, or the LM wrapped to return its loss."""
        if self.model_type == "electra":
            return self.model
        return LanguageModelForTraining(self.model, causal=not self.args.mlm, masked_head=self.spec.masked_head)

    def _objective(self):
        if self.model_type == "electra":
            return electra.ElectraObjective(self.tokenizer, self.args.mlm_probability,
                                            self.args.discriminator_loss_weight)
        return LanguageModelObjective(causal=not self.args.mlm, tokenizer=self.tokenizer,
                                      mlm_probability=self.args.mlm_probability)

    def _autocast(self):
        return hardware.autocast(self.device, self.args.mixed_precision)

    # ---- evaluation -------------------------------------------------------------------------------------------
    def eval_model(self, eval_file, output_dir: str | None = None, verbose: bool = True, silent: bool = False,
                   **kwargs) -> dict:
        """Evaluate on `eval_file`; returns eval_loss and perplexity (= exp(eval_loss), token-weighted) and
        writes eval_results.txt into `output_dir`."""
        files = resolve_files(eval_file)
        features = self._features(files, self.block_size())
        result = self._evaluate_features(features)
        out = Path(output_dir or self.args.output_dir)
        if dist.is_main():
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / "eval_results.txt.tmp"
            tmp.write_text("".join(f"{k} = {v}\n" for k, v in result.items()))
            os.replace(tmp, out / "eval_results.txt")
            if verbose:
                log.info("Evaluation: %s", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in result.items()))
        return result

    def _evaluate_features(self, features) -> dict:
        return evaluate(self._training_module(), self._objective(), features, self.args.eval_batch_size,
                        padding_id(self.tokenizer), self.device, self.args.seed, self._autocast)

    # ---- saving -----------------------------------------------------------------------------------------------
    def _save_to(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.model_type == "electra":
            electra.save_split(self.model, self.tokenizer, folder)
        else:
            self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        self.args.save(str(folder))

    def save_generator(self, output_dir: str | None = None) -> str:
        """ELECTRA: write the generator as a standalone model to `output_dir/generator_model/`."""
        return self._save_one(electra.GENERATOR_DIR, output_dir)

    def save_discriminator(self, output_dir: str | None = None) -> str:
        """ELECTRA: write the discriminator as a standalone model to `output_dir/discriminator_model/` (the one
        to fine-tune for downstream tasks)."""
        return self._save_one(electra.DISCRIMINATOR_DIR, output_dir)

    def _save_one(self, which: str, output_dir: str | None) -> str:
        if self.model_type != "electra":
            raise ArgsError(f"save_{which.split('_')[0]}() is for ELECTRA models; this is {self.model_type!r}")
        out = Path(output_dir or self.args.output_dir)
        if dist.is_main():
            atomic.write_into(out, lambda tmp: electra.save_split(self.model, self.tokenizer, tmp, which=(which,)))
        return str(out / which)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _apply_config_overrides(config, overrides: dict, where: str) -> None:
    known = set(config.to_dict())
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise ArgsError(f"{where}: {config.model_type} config has no field(s) {', '.join(map(repr, unknown))}")
    for k, v in overrides.items():
        setattr(config, k, v)


def _fit_config_to_tokenizer(config, tokenizer) -> None:
    config.vocab_size = len(tokenizer)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None and hasattr(config, name):
            setattr(config, name, value)


def _millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6
