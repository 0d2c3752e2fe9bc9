"""ELECTRA: a small generator fills masked positions, a discriminator spots which tokens were replaced.

Shapes: B = batch, T = tokens, V = vocabulary, N = masked positions in the batch.

The pair trains as one module (so DistributedDataParallel sees one forward) and is saved as two ordinary Hugging
Face models: `generator_model/` (ElectraForMaskedLM) and `discriminator_model/` (ElectraForPreTraining), each with
the tokenizer and a config describing its real size. Checkpoints use the same two folders, so any checkpoint is
already the split form, and safetensors never meets a tensor shared between the two.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers as hf

from .args import ArgsError
from .hub import from_pretrained
from .objectives import IGNORE, _draws_for, mask_tokens, maskable
from .registry import electra_generator_head
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)

GENERATOR_DIR, DISCRIMINATOR_DIR = "generator_model", "discriminator_model"
AUC_BINS = 200


# ---- the objective as pure functions --------------------------------------------------------------------------

def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    """logits (N, V), uniforms (N,) in [0, 1) -> (N,) token ids drawn from softmax(logits), without gradient, by
    inverse-CDF sampling: one uniform number per masked position, drawn on the host with the example's masks, so
    the draw is a pure function of (seed, epoch, example) and costs N random numbers, not N x V. Without
    uniforms (a meta-device trace) the most likely token."""
    logits = logits.detach().float()
    if uniforms is None:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)
    u = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


def replace_tokens(input_ids: torch.Tensor, masked: torch.Tensor, samples: torch.Tensor):
    """input_ids (B, T), masked (B, T) bool, samples (N,) -> (discriminator inputs (B, T), labels (B, T) float).

    A label is 1 where the token differs from the original. A sample that happens to equal the original token is
    labelled 0 (original): the discriminator cannot and should not tell it apart.
    """
    replaced = input_ids.clone()
    replaced[masked] = samples
    return replaced, (replaced != input_ids).float()


def discriminator_loss_sum(logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor):
    """logits (B, T), labels (B, T), scored (B, T) bool -> (summed binary cross-entropy, scored count)."""
    loss = F.binary_cross_entropy_with_logits(logits.float()[scored], labels[scored], reduction="sum")
    return loss, scored.sum()


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
            generator.electra.embeddings = discriminator.electra.embeddings
            generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight

    def forward(self, masked_inputs, attention_mask, input_ids, mlm_labels, uniforms: torch.Tensor | None):
        """One ELECTRA pass; `uniforms` (B, T) draw the replacements. Returns generator loss sum and count,
        discriminator logits (B, T) and labels (B, T)."""
        hidden = self.generator.electra(input_ids=masked_inputs, attention_mask=attention_mask)[0]
        masked = mlm_labels != IGNORE
        gen_at_masked = electra_generator_head(self.generator, hidden[masked])  # only masked positions: (N, V)
        gen_loss = F.cross_entropy(gen_at_masked.float(), mlm_labels[masked], reduction="sum")
        samples = sample_tokens(gen_at_masked, None if uniforms is None else uniforms[masked])
        disc_inputs, disc_labels = replace_tokens(input_ids, masked, samples)
        disc_logits = self.discriminator(input_ids=disc_inputs, attention_mask=attention_mask).logits
        return gen_loss, masked.sum(), disc_logits, disc_labels

    def save_pretrained(self, folder: str | Path) -> None:
        self.generator.save_pretrained(str(Path(folder) / GENERATOR_DIR))
        self.discriminator.save_pretrained(str(Path(folder) / DISCRIMINATOR_DIR))


class ElectraObjective:
    """loss = generator MLM loss + `weight` × discriminator loss (weight 50 in the paper: the per-token binary
    loss is far smaller than the generator's). Evaluation reports the two models apart: the generator's
    token-weighted perplexity over masked positions, and the discriminator's accuracy, precision, recall and AUC
    over all real tokens. exp() of the combined loss means nothing and is never reported."""

    def __init__(self, tokenizer, mlm_probability: float, weight: float):
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mlm_probability, self.weight = mlm_probability, weight
        self.scored_fraction = mlm_probability  # the generator's vocabulary layer sees only masked positions
        self.weights = {"generator": 1.0, "discriminator": weight}

    terms = ("generator", "discriminator")

    def prepare(self, batch: dict, generator_for) -> dict:
        """Host side: the masked generator inputs and labels (B, T), the discriminator's scored positions (B, T),
        the uniform numbers the replacements are drawn with (B, T), and the token count of each loss term."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        scored = maskable(ids, attn, self.special_ids)
        if "score_mask" in batch:  # sliding-window evaluation: the overlap with the previous window is context only
            scored = scored & batch["score_mask"]
        draws = _draws_for(batch, generator_for, self.vocab_size)
        masked_inputs, labels = mask_tokens(ids, scored, self.mask_id, self.mlm_probability, draws)
        return {"input_ids": ids, "masked_inputs": masked_inputs, "attention_mask": attn, "labels": labels,
                "scored": scored, "uniforms": draws["sample"],
                "counts": {"generator": int((labels != IGNORE).sum()), "discriminator": int(scored.sum())}}

    def _forward(self, model, prepared: dict):
        uniforms = None if prepared["input_ids"].device.type == "meta" else prepared["uniforms"]
        gen_sum, _, disc_logits, disc_labels = model(prepared["masked_inputs"], prepared["attention_mask"],
                                                     prepared["input_ids"], prepared["labels"], uniforms)
        return gen_sum, disc_logits, disc_labels, prepared["scored"]

    def loss_sums(self, model, prepared: dict) -> dict:
        """Device side: the generator's summed MLM loss and the discriminator's summed binary loss; each is
        divided by its own token count over the optimizer step."""
        gen_sum, disc_logits, disc_labels, scored = self._forward(model, prepared)
        disc_sum, _ = discriminator_loss_sum(disc_logits, disc_labels, scored)
        return {"generator": gen_sum, "discriminator": disc_sum}

    def eval_sum_shapes(self) -> dict:
        scalars = ["gen_loss_sum", "gen_tokens", "disc_loss_sum", "disc_tokens", "disc_correct", "replaced",
                   "true_pos", "pred_pos"]
        return {**{k: () for k in scalars}, "pos_hist": (AUC_BINS,), "neg_hist": (AUC_BINS,)}

    def eval_sums(self, model, prepared: dict) -> dict:
        gen_sum, disc_logits, disc_labels, scored = self._forward(model, prepared)
        disc_sum, _ = discriminator_loss_sum(disc_logits, disc_labels, scored)
        gen_count, disc_count = prepared["counts"]["generator"], prepared["counts"]["discriminator"]
        prob = torch.sigmoid(disc_logits.float())[scored]
        label = disc_labels[scored].bool()
        pred = prob > 0.5
        bins = (prob * AUC_BINS).long().clamp(max=AUC_BINS - 1).cpu()
        return {"gen_loss_sum": float(gen_sum), "gen_tokens": gen_count, "disc_loss_sum": float(disc_sum),
                "disc_tokens": disc_count, "disc_correct": (pred == label).sum().item(),
                "replaced": label.sum().item(), "true_pos": (pred & label).sum().item(),
                "pred_pos": pred.sum().item(),
                "pos_hist": np.bincount(bins[label.cpu()].numpy(), minlength=AUC_BINS).astype(np.float64),
                "neg_hist": np.bincount(bins[~label.cpu()].numpy(), minlength=AUC_BINS).astype(np.float64)}

    def eval_metrics(self, t: dict) -> dict:
        gen_loss = t["gen_loss_sum"] / max(t["gen_tokens"], 1)
        disc_loss = t["disc_loss_sum"] / max(t["disc_tokens"], 1)
        gen_ppl = math.exp(min(gen_loss, 700.0))
        return {"eval_loss": gen_loss + self.weight * disc_loss, "perplexity": gen_ppl,
                "generator_loss": gen_loss, "generator_perplexity": gen_ppl, "discriminator_loss": disc_loss,
                "discriminator_accuracy": t["disc_correct"] / max(t["disc_tokens"], 1),
                "discriminator_baseline_accuracy": 1.0 - t["replaced"] / max(t["disc_tokens"], 1),
                "discriminator_precision": t["true_pos"] / max(t["pred_pos"], 1),
                "discriminator_recall": t["true_pos"] / max(t["replaced"], 1),
                "discriminator_auc": histogram_auc(np.asarray(t["pos_hist"]), np.asarray(t["neg_hist"])),
                "eval_tokens": int(t["gen_tokens"])}


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from score histograms (equal-width bins of the replaced probability): the chance that a replaced
    token scores above an original one, ties counted half. Histograms add up over batches and processes."""
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # originals in strictly lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


# ---- building, loading and saving the pair --------------------------------------------------------------------

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
    for name in ("pad_token_id",):
        setattr(cfg, name, getattr(discriminator, name))
    return cfg


def init_electra(lm, model_name, train_files, generator_name, discriminator_name) -> None:
    """Fill `lm` (a LanguageModelingModel) with an ElectraPair, its tokenizer and config."""
    args = lm.args
    tie = args.tie_generator_and_discriminator_embeddings
    if not args.mlm:
        raise ArgsError("ELECTRA masks its inputs like MLM: set mlm=True")
    for name, cfg in (("generator_config", args.generator_config), ("discriminator_config",
                                                                     args.discriminator_config)):
        unknown = [k for k in cfg if k not in hf.ElectraConfig().to_dict()]
        if unknown:
            raise ArgsError(f"args.{name}: ElectraConfig has no field(s) {', '.join(map(repr, unknown))}")
    if model_name not in (None, "electra") and not (generator_name or discriminator_name):
        folder = Path(model_name)
        if _is_combined_checkpoint(folder) and not (folder / DISCRIMINATOR_DIR).is_dir():
            gen, disc = load_combined_checkpoint(folder)
            lm.tokenizer = load_tokenizer(args.tokenizer_name or str(folder))
            return _install(lm, gen, disc, tie)
        if not (folder / DISCRIMINATOR_DIR).is_dir():
            raise ArgsError(f"{model_name}: not a saved ELECTRA pair (no {DISCRIMINATOR_DIR}/ inside); to start "
                            f"from separate models use model_name='electra' with generator_name= and "
                            f"discriminator_name=")
        generator_name, discriminator_name = str(folder / GENERATOR_DIR), str(folder / DISCRIMINATOR_DIR)
        lm._maybe_resume_from(model_name)
    if generator_name or discriminator_name:
        gen = from_pretrained(hf.ElectraForMaskedLM, generator_name, what="generator") if generator_name else None
        disc = (from_pretrained(hf.ElectraForPreTraining, discriminator_name, what="discriminator")
                if discriminator_name else None)
        lm.tokenizer = load_tokenizer(args.tokenizer_name or discriminator_name or generator_name)
        if disc is None:
            disc = hf.ElectraForPreTraining(_discriminator_config(lm, gen.config.max_position_embeddings))
        if gen is None:
            gen = hf.ElectraForMaskedLM(generator_config_for(disc.config, args.generator_config, tie))
        if tie and not torch.equal(gen.electra.embeddings.word_embeddings.weight,
                                   disc.electra.embeddings.word_embeddings.weight):
            log.info("Tying embeddings: the generator now uses the discriminator's embedding layer")
    else:
        disc_cfg = _discriminator_config(lm, None, train_files)
        disc = hf.ElectraForPreTraining(disc_cfg)
        gen = hf.ElectraForMaskedLM(generator_config_for(disc_cfg, args.generator_config, tie))
    _install(lm, gen, disc, tie)


def _install(lm, gen, disc, tie: bool) -> None:
    lm.model = ElectraPair(gen, disc, tie)
    lm.config = disc.config
    log.info("ELECTRA: generator %.2fM parameters (hidden %d), discriminator %.2fM (hidden %d), tied embeddings: %s",
             _millions(gen), gen.config.hidden_size, _millions(disc), disc.config.hidden_size, tie)


def _is_combined_checkpoint(folder: Path) -> bool:
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
    models = {}
    for prefix, cls, sub in (("generator_model.", hf.ElectraForMaskedLM, "generator_config"),
                             ("discriminator_model.", hf.ElectraForPreTraining, "discriminator_config")):
        model = cls(hf.ElectraConfig.from_pretrained(str(folder / sub)))
        own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        models[prefix] = (model, own)
    table = "electra.embeddings.word_embeddings.weight"
    gen_w, disc_w = models["generator_model."][1], models["discriminator_model."][1]
    if table not in disc_w and table in gen_w:
        disc_w[table] = gen_w[table]
    if table not in gen_w and table in disc_w:
        gen_w[table] = disc_w[table]
    for prefix, (model, own) in models.items():
        missing, unexpected = model.load_state_dict(own, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids") and k != "generator_lm_head.weight"]
        if missing or unexpected or not own:
            raise ArgsError(f"{folder}: the {prefix[:-7]} weights do not fit its config "
                            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    gen = models["generator_model."][0]
    if gen.generator_lm_head.weight.data_ptr() != gen.electra.embeddings.word_embeddings.weight.data_ptr():
        gen.tie_weights()
    log.info("%s: loaded a Simple Transformers ELECTRA checkpoint (one file for the pair)", folder)
    return gen, models["discriminator_model."][0]


def _discriminator_config(lm, positions, train_files=None) -> hf.ElectraConfig:
    cfg = hf.ElectraConfig(**lm.args.discriminator_config)
    if positions:
        cfg.max_position_embeddings = positions
    max_length = lm._max_length(cfg, requested=lm._requested_block())
    if not getattr(lm, "tokenizer", None):
        lm.tokenizer = lm._scratch_tokenizer(train_files, max_length)
    cfg.vocab_size = len(lm.tokenizer)
    cfg.pad_token_id = lm.tokenizer.pad_token_id
    return cfg


def _millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def save_split(pair: ElectraPair, tokenizer, folder: Path, which=(GENERATOR_DIR, DISCRIMINATOR_DIR)) -> None:
    """Write the generator and/or discriminator as standalone Hugging Face model folders with the tokenizer."""
    for name in which:
        model = pair.generator if name == GENERATOR_DIR else pair.discriminator
        target = Path(folder) / name
        model.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))


def load_pair_weights(pair: ElectraPair, folder: Path) -> None:
    """Load both models' weights from a saved pair (a checkpoint of this same architecture)."""
    gen = hf.ElectraForMaskedLM.from_pretrained(str(Path(folder) / GENERATOR_DIR))
    disc = hf.ElectraForPreTraining.from_pretrained(str(Path(folder) / DISCRIMINATOR_DIR))
    pair.discriminator.load_state_dict(disc.state_dict())
    pair.generator.load_state_dict(gen.state_dict())
    if pair.tie:  # both copies of the shared table are equal; make sure the discriminator's is the one kept
        pair.discriminator.load_state_dict(disc.state_dict())
