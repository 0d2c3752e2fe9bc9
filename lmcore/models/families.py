"""Model families: how a model type is built, loaded, trained, saved and checkpointed.

Two families: one Hugging Face language model (bert, camembert, distilbert, gpt2, longformer, openai-gpt,
roberta), and the ELECTRA generator + discriminator pair. `registry.MODEL_TYPES` names each type's family (its
entry, a `registry.ModelType`, is what every method here takes as `entry`) and the front doors talk to it through
`ModelFamily` only, never asking which it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
import transformers as hf

from ..training import checkpoint
from .args import ArgsError, LanguageModelingArgs
from ..objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR, ElectraObjective, replace_tokens, sample_tokens
from .hub import from_pretrained
from ..objectives.language import (IGNORE, LanguageModelForTraining, LanguageModelObjective, Objective, mask_for,
                                   rows_at)
from .registry import ModelType, electra_generator_head
from ..data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

TokenizerFor = Callable[[int], object]
"""Makes (trains or loads) the tokenizer of a model built from scratch, given its longest example in tokens."""


@dataclass
class Built:
    model: torch.nn.Module
    """What the user holds as `LanguageModelingModel.model`: a Hugging Face model, or an ElectraPair."""
    tokenizer: object
    config: object
    """The config whose positions bound the block size."""
    resume_from: str | None = None
    """A checkpoint folder the model was loaded from: training continues from it."""


@dataclass
class EncoderSource:
    """Where a sequence classifier's encoder comes from: a model folder (or hub name) and its tokenizer, or
    weights already loaded (`encoder`, a model whose state dict holds the encoder under its usual prefix)."""

    path: str
    """The folder (or hub name) whose config.json describes the encoder."""
    tokenizer: str
    encoder: torch.nn.Module | None = None
    note: str | None = None
    """Said once when the encoder is not simply `model_name` (which part of an ELECTRA output is used)."""


@runtime_checkable
class ModelFamily(Protocol):
    """What the front doors ask of a model family."""

    def problems(self, entry: ModelType, args: LanguageModelingArgs) -> list[str]:
        """What is wrong with `args` for this model type (empty: nothing)."""
        ...

    def from_scratch(self, entry: ModelType, args: LanguageModelingArgs, tokenizer_for: TokenizerFor) -> Built:
        ...

    def load(self, entry: ModelType, args: LanguageModelingArgs, model_name: str | None, generator_name: str | None,
             discriminator_name: str | None, tokenizer_for: TokenizerFor) -> Built:
        """A saved model, a checkpoint (training continues from it: `Built.resume_from`) or a cached hub name."""
        ...

    def training_module(self, entry: ModelType, args: LanguageModelingArgs, model) -> torch.nn.Module:
        """The module the objective calls (and DistributedDataParallel wraps)."""
        ...

    def objective(self, args: LanguageModelingArgs, tokenizer) -> Objective:
        ...

    def save(self, model, tokenizer, folder: Path, which: tuple | None = None) -> None:
        """The model as Hugging Face folders; `which`: only those of `parts()` (default everything)."""
        ...

    def load_weights(self, model, folder: Path) -> None:
        """A checkpoint's weights into `model` (resume)."""
        ...

    def embedding_models(self, model) -> list:
        """The Hugging Face models whose token embeddings follow the tokenizer's size."""
        ...

    def retie(self, model) -> None:
        """Share again what resizing the embeddings may have untied."""
        ...

    def parts(self) -> tuple[str, ...]:
        """Names of the standalone models this family saves apart (save_generator / save_discriminator)."""
        ...

    def generates_text(self, entry: ModelType, args: LanguageModelingArgs) -> bool:
        ...

    def encoder_source(self, model_name: str) -> EncoderSource:
        """What a sequence classifier built from `model_name` starts from."""
        ...


def requested_block(args: LanguageModelingArgs) -> int:
    return args.block_size if args.block_size > 0 else args.max_seq_length


def fit_positions(entry: ModelType, config, requested: int) -> int:
    """Longest example the model can take; a from-scratch config grows its positions to fit `requested`."""
    field, offset = entry.positions_field, entry.position_offset
    if getattr(config, field) - offset < requested:
        setattr(config, field, requested + offset)
    return getattr(config, field) - offset


def apply_config_overrides(config, overrides: dict, where: str) -> None:
    known = set(config.to_dict())
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise ArgsError(f"{where}: {config.model_type} config has no field(s) {', '.join(map(repr, unknown))}")
    for k, v in overrides.items():
        setattr(config, k, v)


def millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def resume_point(folder: str) -> str | None:
    """A checkpoint passed as model_name: training continues from it (the Simple Transformers way)."""
    return str(folder) if checkpoint.is_checkpoint(folder) else None


class SingleModel:
    """One Hugging Face model with a masked-LM or causal-LM head."""

    def problems(self, entry: ModelType, args: LanguageModelingArgs) -> list[str]:
        if args.mlm and entry.mlm_cls is None:
            return [f"model_type {entry.name!r} is a causal language model: set mlm=False"]
        if not args.mlm and entry.clm_cls is None:
            return [f"model_type {entry.name!r} is a masked language model: set mlm=True "
                    "(mlm=False is for gpt2 and openai-gpt)"]
        return []

    def from_scratch(self, entry, args, tokenizer_for: TokenizerFor) -> Built:
        config = (from_pretrained(hf.AutoConfig, args.config_name, what="config")
                  if args.config_name else entry.config_cls())
        apply_config_overrides(config, args.config, "args.config")
        tokenizer = tokenizer_for(fit_positions(entry, config, requested_block(args)))
        config.vocab_size = len(tokenizer)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(tokenizer, name, None)
            if value is not None and hasattr(config, name):
                setattr(config, name, value)
        model = entry.model_cls(args.mlm)(config)
        log.info("Initialised a %s model from scratch: %.2fM parameters, vocabulary %d", entry.name,
                 millions(model), len(tokenizer))
        return Built(model, tokenizer, config)

    def load(self, entry, args, model_name, generator_name, discriminator_name, tokenizer_for) -> Built:
        config = from_pretrained(hf.AutoConfig, model_name, what="model")
        expected = entry.config_cls.model_type
        if config.model_type != expected:
            raise ArgsError(f"{model_name}: holds a {config.model_type!r} model, but model_type is "
                            f"{entry.name!r} (expects {expected!r})")
        apply_config_overrides(config, args.config, "args.config")
        model, info = from_pretrained(entry.model_cls(args.mlm), model_name, config=config, output_loading_info=True)
        fresh = sorted(set(info.get("missing_keys", [])))
        if fresh:
            log.warning("%s: %d weight(s) not in the checkpoint were freshly initialised (%s%s): expected when "
                        "starting from an encoder without an LM head", model_name, len(fresh),
                        ", ".join(fresh[:4]), ", ..." if len(fresh) > 4 else "")
        tokenizer = load_tokenizer(args.tokenizer_name or model_name)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        return Built(model, tokenizer, model.config, resume_point(model_name))

    def training_module(self, entry, args, model) -> torch.nn.Module:
        return LanguageModelForTraining(model, causal=not args.mlm, masked_head=entry.masked_head)

    def objective(self, args, tokenizer) -> Objective:
        return LanguageModelObjective(causal=not args.mlm, tokenizer=tokenizer, mlm_probability=args.mlm_probability)

    def save(self, model, tokenizer, folder: Path, which: tuple | None = None) -> None:
        model.save_pretrained(str(folder))  # one model: no parts to choose from
        tokenizer.save_pretrained(str(folder))

    def load_weights(self, model, folder: Path) -> None:
        model.load_state_dict(type(model).from_pretrained(str(folder)).state_dict())

    def embedding_models(self, model) -> list:
        return [model]

    def retie(self, model) -> None:
        pass

    def parts(self) -> tuple[str, ...]:
        return ()

    def generates_text(self, entry, args) -> bool:
        return not args.mlm and entry.clm_cls is not None

    def encoder_source(self, model_name: str) -> EncoderSource:
        """What a sequence classifier starts from: the model itself (its LM head, if any, is dropped)."""
        return EncoderSource(model_name, model_name)


class ElectraPair(torch.nn.Module):
    """Generator + discriminator; with `tie`, the generator uses the discriminator's embedding layer (token,
    position and type embeddings) and its output layer is that same token table."""

    def __init__(self, generator: hf.ElectraForMaskedLM, discriminator: hf.ElectraForPreTraining, tie: bool):
        super().__init__()
        self.generator, self.discriminator, self.tie = generator, discriminator, tie
        if tie:
            g, d = generator.config, discriminator.config
            if g.embedding_size != d.embedding_size or g.vocab_size != d.vocab_size:
                raise ArgsError(
                    f"tie_generator_and_discriminator_embeddings needs equal embedding_size and vocab_size; "
                    f"generator has {g.embedding_size}/{g.vocab_size}, discriminator {d.embedding_size}/"
                    f"{d.vocab_size} (set generator_config['embedding_size'] or turn tying off)")
            self.retie()

    def retie(self) -> None:
        if self.tie:
            self.generator.electra.embeddings = self.discriminator.electra.embeddings
            self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    def forward(self, masked_inputs, attention_mask, input_ids, mlm_labels, uniforms: torch.Tensor | None,
                masked_index: torch.Tensor | None = None, padded: bool = True):
        """One ELECTRA pass; `uniforms` (B, T) draw the replacements; `masked_index`, the masked positions
        flattened (lmcore.objectives.language.host_facts), gathers them without reading their count back;
        `padded`: whether any position is padding (`mask_for`). Returns generator loss sum and count,
        discriminator logits (B, T) and labels (B, T)."""
        attention_mask = mask_for(self.generator.electra, attention_mask, padded)
        hidden = self.generator.electra(input_ids=masked_inputs, attention_mask=attention_mask)[0]
        masked = mlm_labels != IGNORE
        gen_at_masked = electra_generator_head(self.generator, rows_at(hidden, masked, masked_index))  # (N, V)
        gen_loss = F.cross_entropy(gen_at_masked.float(), rows_at(mlm_labels, masked, masked_index), reduction="sum")
        samples = sample_tokens(gen_at_masked, None if uniforms is None else rows_at(uniforms, masked, masked_index))
        disc_inputs, disc_labels = replace_tokens(input_ids, masked, samples, masked_index)
        disc_logits = self.discriminator(input_ids=disc_inputs, attention_mask=attention_mask).logits
        return gen_loss, masked.sum(), disc_logits, disc_labels


def generator_config_for(discriminator: hf.ElectraConfig, overrides: dict, tie: bool) -> hf.ElectraConfig:
    """The generator's config: `overrides` over the defaults; with no overrides, a quarter of the discriminator's
    width (hidden, FFN, heads) at its depth, as in the ELECTRA paper. Tied embeddings force the same
    embedding_size and vocabulary."""
    if overrides:
        cfg = hf.ElectraConfig(**overrides)
    else:
        d = discriminator
        cfg = hf.ElectraConfig(**{**d.to_dict(), "hidden_size": max(1, d.hidden_size // 4),
                                  "intermediate_size": max(1, d.intermediate_size // 4),
                                  "num_attention_heads": max(1, d.num_attention_heads // 4)})
    cfg.vocab_size = discriminator.vocab_size
    cfg.max_position_embeddings = discriminator.max_position_embeddings
    if tie and "embedding_size" not in overrides:
        cfg.embedding_size = discriminator.embedding_size
    cfg.pad_token_id = discriminator.pad_token_id
    return cfg


class ElectraFamily:
    """The ELECTRA pair: trained as one module, saved as two ordinary models (`generator_model/`,
    `discriminator_model/`), which is also the layout of its checkpoints."""

    def problems(self, entry, args: LanguageModelingArgs) -> list[str]:
        p = [] if args.mlm else ["ELECTRA masks its inputs like MLM: set mlm=True"]
        known = hf.ElectraConfig().to_dict()
        for name in ("config", "generator_config", "discriminator_config"):
            unknown = [k for k in getattr(args, name) if k not in known]
            if unknown:
                p.append(f"args.{name}: ElectraConfig has no field(s) {', '.join(map(repr, unknown))}")
        if args.config and args.discriminator_config:
            p.append("args.config and args.discriminator_config are both set: ELECTRA has two models, and "
                     "args.config stands for the discriminator only when discriminator_config is empty; put "
                     "these fields in discriminator_config (and the generator's in generator_config)")
        return p

    @staticmethod
    def discriminator_settings(args: LanguageModelingArgs) -> dict:
        """The discriminator's config fields: `discriminator_config`, or else `config` (what a user of the other
        model types sets, and what the pipeline's presets carry), said in one line so it is never silent."""
        if args.config and not args.discriminator_config:
            log.info("ELECTRA: args.config %s describes the discriminator (as args.discriminator_config); the "
                     "generator is %s", args.config, "args.generator_config" if args.generator_config else
                     "a quarter of its width (set args.generator_config to choose)")
            return dict(args.config)
        return dict(args.discriminator_config)

    def from_scratch(self, entry, args, tokenizer_for: TokenizerFor) -> Built:
        cfg = hf.ElectraConfig(**self.discriminator_settings(args))
        tokenizer = tokenizer_for(fit_positions(entry, cfg, requested_block(args)))
        cfg.vocab_size, cfg.pad_token_id = len(tokenizer), tokenizer.pad_token_id
        tie = args.tie_generator_and_discriminator_embeddings
        gen = hf.ElectraForMaskedLM(generator_config_for(cfg, args.generator_config, tie))
        return self._built(hf.ElectraForPreTraining(cfg), gen, tokenizer, tie)

    def load(self, entry, args, model_name, generator_name, discriminator_name, tokenizer_for) -> Built:
        tie = args.tie_generator_and_discriminator_embeddings
        resume = None
        if model_name not in (None, "electra") and not (generator_name or discriminator_name):
            folder = Path(model_name)
            if is_combined_checkpoint(folder) and not (folder / DISCRIMINATOR_DIR).is_dir():
                gen, disc = load_combined_checkpoint(folder)
                return self._built(disc, gen, load_tokenizer(args.tokenizer_name or str(folder)), tie)
            if not (folder / DISCRIMINATOR_DIR).is_dir():
                raise ArgsError(f"{model_name}: not a saved ELECTRA pair (no {DISCRIMINATOR_DIR}/ inside); to "
                                f"start from separate models use model_name='electra' with generator_name= and "
                                f"discriminator_name=")
            generator_name, discriminator_name = str(folder / GENERATOR_DIR), str(folder / DISCRIMINATOR_DIR)
            resume = resume_point(model_name)
        gen = from_pretrained(hf.ElectraForMaskedLM, generator_name, what="generator") if generator_name else None
        disc = None
        if discriminator_name:
            # args.config changes a loaded model's settings (dropout, ...) as it does for the other model types;
            # here it reaches the discriminator, the model users keep.
            cfg = from_pretrained(hf.AutoConfig, discriminator_name, what="discriminator")
            if args.config:
                apply_config_overrides(cfg, args.config, "args.config (applied to the discriminator)")
                log.info("ELECTRA: args.config %s applied to the loaded discriminator", args.config)
            disc = from_pretrained(hf.ElectraForPreTraining, discriminator_name, config=cfg, what="discriminator")
        tokenizer = load_tokenizer(args.tokenizer_name or discriminator_name or generator_name)
        if disc is None:
            cfg = hf.ElectraConfig(**self.discriminator_settings(args))
            cfg.max_position_embeddings = gen.config.max_position_embeddings
            fit_positions(entry, cfg, requested_block(args))
            cfg.vocab_size, cfg.pad_token_id = len(tokenizer), tokenizer.pad_token_id
            disc = hf.ElectraForPreTraining(cfg)
        if gen is None:
            gen = hf.ElectraForMaskedLM(generator_config_for(disc.config, args.generator_config, tie))
        if tie and not torch.equal(gen.electra.embeddings.word_embeddings.weight,
                                   disc.electra.embeddings.word_embeddings.weight):
            log.info("Tying embeddings: the generator now uses the discriminator's embedding layer")
        built = self._built(disc, gen, tokenizer, tie)
        built.resume_from = resume
        return built

    @staticmethod
    def _built(disc, gen, tokenizer, tie: bool) -> Built:
        log.info("ELECTRA: generator %.2fM parameters (hidden %d), discriminator %.2fM (hidden %d), tied "
                 "embeddings: %s", millions(gen), gen.config.hidden_size, millions(disc), disc.config.hidden_size,
                 tie)
        return Built(ElectraPair(gen, disc, tie), tokenizer, disc.config)

    def training_module(self, entry, args, model) -> torch.nn.Module:
        return model

    def objective(self, args, tokenizer) -> Objective:
        return ElectraObjective(tokenizer, args.mlm_probability, args.discriminator_loss_weight)

    def save(self, model: ElectraPair, tokenizer, folder: Path, which: tuple | None = None) -> None:
        """The generator and/or discriminator (`which`, default both) as standalone Hugging Face model folders,
        each with the tokenizer; saving both also puts the tokenizer at the top, so the pair's folder loads as a
        whole."""
        for name in which or self.parts():
            part = model.generator if name == GENERATOR_DIR else model.discriminator
            part.save_pretrained(str(Path(folder) / name))
            tokenizer.save_pretrained(str(Path(folder) / name))
        if which is None:
            tokenizer.save_pretrained(str(folder))

    def load_weights(self, model: ElectraPair, folder: Path) -> None:
        gen = hf.ElectraForMaskedLM.from_pretrained(str(Path(folder) / GENERATOR_DIR))
        disc = hf.ElectraForPreTraining.from_pretrained(str(Path(folder) / DISCRIMINATOR_DIR))
        model.discriminator.load_state_dict(disc.state_dict())
        model.generator.load_state_dict(gen.state_dict())
        if model.tie:  # both copies of the shared table are equal; the discriminator's is the one kept
            model.discriminator.load_state_dict(disc.state_dict())

    def embedding_models(self, model: ElectraPair) -> list:
        return [model.generator, model.discriminator]

    def retie(self, model: ElectraPair) -> None:
        model.retie()

    def parts(self) -> tuple[str, ...]:
        return (GENERATOR_DIR, DISCRIMINATOR_DIR)

    def generates_text(self, entry, args) -> bool:
        return False

    def encoder_source(self, model_name: str) -> EncoderSource:
        """What a sequence classifier starts from: the discriminator (the model ELECTRA fine-tunes). A whole
        ELECTRA output folder gives its `discriminator_model/`, a Simple Transformers checkpoint (one file for the
        pair) its discriminator's weights; any other folder or name is taken as a discriminator."""
        folder = Path(model_name)
        if (folder / DISCRIMINATOR_DIR).is_dir():
            return EncoderSource(str(folder / DISCRIMINATOR_DIR), str(folder / DISCRIMINATOR_DIR),
                                 note=f"{model_name}: an ELECTRA output folder; fine-tuning its "
                                      f"{DISCRIMINATOR_DIR}/ (the generator is not used)")
        if folder.is_dir() and is_combined_checkpoint(folder):
            _, disc = load_combined_checkpoint(folder)
            return EncoderSource(str(folder / "discriminator_config"), str(folder), encoder=disc,
                                 note=f"{model_name}: a Simple Transformers ELECTRA checkpoint; fine-tuning its "
                                      "discriminator")
        return EncoderSource(model_name, model_name)


def is_combined_checkpoint(folder: Path) -> bool:
    """Simple Transformers' own ELECTRA checkpoints: one weights file for the pair, with its two configs in
    `generator_config/` and `discriminator_config/`."""
    return (folder / "generator_config" / "config.json").is_file() and \
        (folder / "discriminator_config" / "config.json").is_file()


def load_combined_checkpoint(folder: Path):
    """(generator, discriminator) from a Simple Transformers ELECTRA checkpoint: the pair's weights under the
    prefixes `generator_model.` / `discriminator_model.` in model.safetensors or pytorch_model.bin. Their pair
    shares the token embedding table, which a safetensors file may store only once."""
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        weights = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ArgsError(f"{folder}: has generator_config/ and discriminator_config/ but no model.safetensors or "
                        "pytorch_model.bin with the pair's weights")
    parts = {}
    for prefix, cls, sub in (("generator_model.", hf.ElectraForMaskedLM, "generator_config"),
                             ("discriminator_model.", hf.ElectraForPreTraining, "discriminator_config")):
        own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        parts[prefix] = (cls(hf.ElectraConfig.from_pretrained(str(folder / sub))), own)
    table = "electra.embeddings.word_embeddings.weight"
    gen_w, disc_w = parts["generator_model."][1], parts["discriminator_model."][1]
    if table not in disc_w and table in gen_w:
        disc_w[table] = gen_w[table]
    if table not in gen_w and table in disc_w:
        gen_w[table] = disc_w[table]
    for prefix, (model, own) in parts.items():
        missing, unexpected = model.load_state_dict(own, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids") and k != "generator_lm_head.weight"]
        if missing or unexpected or not own:
            raise ArgsError(f"{folder}: the {prefix[:-7]} weights do not fit its config "
                            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    gen = parts["generator_model."][0]
    if gen.generator_lm_head.weight.data_ptr() != gen.electra.embeddings.word_embeddings.weight.data_ptr():
        gen.tie_weights()
    log.info("%s: loaded a Simple Transformers ELECTRA checkpoint (one file for the pair)", folder)
    return gen, parts["discriminator_model."][0]


FAMILIES: dict[str, ModelFamily] = {"single": SingleModel(), "electra": ElectraFamily()}


def family_of(entry: ModelType) -> ModelFamily:
    return FAMILIES[entry.family]
