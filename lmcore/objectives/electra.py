"""The ELECTRA objective: a small generator fills masked positions, a discriminator spots which tokens were
replaced. Pure functions over tensors, and the objective that combines them; the pair module itself, and how it
is built, loaded and saved, is the ELECTRA family in `lmcore.models.families`.

Shapes: B = batch, T = tokens, V = vocabulary, N = masked positions in the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .language import IGNORE, draws_for, host_facts, mask_tokens, maskable, rows_at

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


def replace_tokens(input_ids: torch.Tensor, masked: torch.Tensor, samples: torch.Tensor,
                   masked_index: torch.Tensor | None = None):
    """input_ids (B, T), masked (B, T) bool, samples (N,) -> (discriminator inputs (B, T), labels (B, T) float);
    `masked_index`, the masked positions flattened (`host_facts`), writes the samples without reading N back.

    A label is 1 where the token differs from the original. A sample that happens to equal the original token is
    labelled 0 (original): the discriminator cannot and should not tell it apart.
    """
    replaced = input_ids.clone()
    if masked_index is None:
        replaced[masked] = samples
    else:
        replaced.view(-1).index_copy_(0, masked_index, samples)
    return replaced, (replaced != input_ids).float()


def discriminator_loss_sum(logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor,
                           scored_index: torch.Tensor | None = None):
    """logits (B, T), labels (B, T), scored (B, T) bool -> (summed binary cross-entropy, scored count)."""
    loss = F.binary_cross_entropy_with_logits(rows_at(logits.float(), scored, scored_index),
                                              rows_at(labels, scored, scored_index), reduction="sum")
    return loss, scored.sum()


class ElectraObjective:
    """The ELECTRA `Objective` (lmcore.objectives.language), masking exactly as MLM does (`draws_for`, `mask_tokens`).
    loss = generator MLM loss + `weight` × discriminator loss (weight 50 in the paper: the per-token binary
    loss is far smaller than the generator's). Evaluation reports the two models apart: the generator's
    token-weighted perplexity over masked positions, and the discriminator's accuracy, precision, recall, F1 and
    AUC over all real tokens, beside the accuracy of always answering "original". exp() of the combined loss
    means nothing and is never reported."""

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
        draws = draws_for(batch, generator_for, self.vocab_size)
        masked_inputs, labels = mask_tokens(ids, scored, self.mask_id, self.mlm_probability, draws)
        return {"input_ids": ids, "masked_inputs": masked_inputs, "attention_mask": attn, "labels": labels,
                "scored": scored, "uniforms": draws["sample"],
                "counts": {"generator": int((labels != IGNORE).sum()), "discriminator": int(scored.sum())},
                **host_facts(attn, masked=labels != IGNORE, scored=scored)}

    def _forward(self, model, prepared: dict):
        uniforms = None if prepared["input_ids"].device.type == "meta" else prepared["uniforms"]
        gen_sum, _, disc_logits, disc_labels = model(prepared["masked_inputs"], prepared["attention_mask"],
                                                     prepared["input_ids"], prepared["labels"], uniforms,
                                                     masked_index=prepared.get("masked_index"),
                                                     padded=prepared.get("padded", True))
        return gen_sum, disc_logits, disc_labels, prepared["scored"]

    def loss_sums(self, model, prepared: dict) -> dict:
        """Device side: the generator's summed MLM loss and the discriminator's summed binary loss; each is
        divided by its own token count over the optimizer step."""
        gen_sum, disc_logits, disc_labels, scored = self._forward(model, prepared)
        disc_sum, _ = discriminator_loss_sum(disc_logits, disc_labels, scored, prepared.get("scored_index"))
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
                # F1 of the replaced class: 0 for a discriminator that never says "replaced", however high its
                # accuracy (most tokens are originals, so the all-original baseline scores ~85% accuracy)
                "discriminator_f1": 2 * t["true_pos"] / max(t["pred_pos"] + t["replaced"], 1),
                "discriminator_auc": histogram_auc(np.asarray(t["pos_hist"]), np.asarray(t["neg_hist"])),
                "eval_tokens": int(t["gen_tokens"])}


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from score histograms (equal-width bins of the replaced probability): the chance that a replaced
    token scores above an original one, ties counted half. Histograms add up over batches and processes."""
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # originals in strictly lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
