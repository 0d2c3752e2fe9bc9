"""Sequence classification as one more objective of the one training loop, and its scores.

Same two halves as `LanguageModelObjective`: `prepare` (host: the batch's inputs and how much each example
weighs) and `loss_sums` (device: the summed loss). The loop divides by the weight of the whole optimizer step
(all micro-batches, all processes), so every example weighs the same however the step is split; with class
weights, an example weighs its class's weight (the weighted mean torch's cross-entropy takes). Evaluation sums a
confusion matrix (regression: the moments of prediction and target), so accuracy, macro-F1, MCC and Pearson's r
add up exactly over batches and processes.

Shapes: B = batch, T = tokens, K = classes (1 for regression).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class SequenceClassifierForTraining(torch.nn.Module):
    """A Hugging Face *ForSequenceClassification model whose forward returns (summed loss, logits (B, K)): the
    module training and evaluation call (and that DistributedDataParallel wraps)."""

    def __init__(self, model, regression: bool, class_weight: list[float] | None = None):
        super().__init__()
        self.model, self.regression = model, regression
        self.class_weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        if self.regression:
            return F.mse_loss(logits.float().squeeze(-1), labels.float(), reduction="sum"), logits
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum"), logits


class ClassificationObjective:
    """Cross-entropy over K classes (optionally class-weighted), or squared error (`regression`): an `Objective`
    (lmcore.objectives.language) with one term, the examples."""

    terms = ("examples",)

    def __init__(self, num_labels: int, regression: bool, class_weight: list[float] | None = None):
        self.num_labels, self.regression = num_labels, regression
        self.class_weight = None if class_weight is None else np.asarray(class_weight, dtype=np.float64)
        self.weights = {"examples": 1.0}
        self.collected: list | None = None
        """When a list: every evaluated batch's (example numbers, logits) is appended (model outputs, Spearman,
        the user's metric functions, wrong predictions)."""

    def prepare(self, batch: dict, generator_for=None) -> dict:
        """Host side: inputs, labels (B,) and the step weight of the batch (its examples, or their class
        weights). Nothing random: `generator_for` is not used."""
        labels = batch["labels"]
        weight = float(labels.shape[0]) if self.class_weight is None or self.regression else \
            float(self.class_weight[labels.numpy()].sum())
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels,
               "index": batch["index"], "counts": {"examples": weight}}
        if "token_type_ids" in batch:
            out["token_type_ids"] = batch["token_type_ids"]
        return out

    @staticmethod
    def _inputs(prepared: dict) -> dict:
        return {k: prepared[k] for k in ("input_ids", "attention_mask", "labels", "token_type_ids") if k in prepared}

    def loss_sums(self, model, prepared: dict) -> dict:
        """Device side: {"examples": the summed (weighted) loss of the batch}."""
        loss, _ = model(**self._inputs(prepared))
        return {"examples": loss}

    def eval_sum_shapes(self) -> dict:
        if self.regression:  # n, sum of prediction, of target, of their squares, of their product
            return {"loss_sum": (), "weight": (), "moments": (6,)}
        return {"loss_sum": (), "weight": (), "confusion": (self.num_labels, self.num_labels)}

    def eval_sums(self, model, prepared: dict) -> dict:
        loss, logits = model(**self._inputs(prepared))
        logits, labels = logits.float().cpu(), prepared["labels"].cpu()
        if self.collected is not None:
            self.collected.append((prepared["index"].cpu().numpy(), logits.numpy()))
        out = {"loss_sum": float(loss), "weight": prepared["counts"]["examples"]}
        if self.regression:
            x, y = logits.squeeze(-1).double().numpy(), labels.double().numpy()
            out["moments"] = np.array([len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
        else:
            out["confusion"] = confusion(labels.numpy(), logits.argmax(-1).numpy(), self.num_labels)
        return out

    def eval_metrics(self, totals: dict) -> dict:
        result = {"eval_loss": totals["loss_sum"] / max(totals["weight"], 1e-12)}
        if self.regression:
            result["pearson"] = pearson_from_moments(totals["moments"])
        else:
            result.update(confusion_scores(totals["confusion"]))
        return result


def confusion(labels: np.ndarray, predictions: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).astype(np.float64)


def confusion_scores(c: np.ndarray) -> dict:
    """accuracy, macro-F1 (over the classes that occur as truth or prediction, as scikit-learn averages) and
    Matthews' correlation (its multi-class form); binary adds tp / tn / fp / fn as Simple Transformers reports."""
    c = np.asarray(c, dtype=np.float64)
    n, hits = c.sum(), np.trace(c)
    truth, predicted = c.sum(1), c.sum(0)
    present = (truth + predicted) > 0
    f1 = np.divide(2 * np.diag(c), truth + predicted, out=np.zeros(len(c)), where=present)
    denominator = math.sqrt(max(n * n - predicted @ predicted, 0.0) * max(n * n - truth @ truth, 0.0))
    out = {"mcc": float((hits * n - truth @ predicted) / denominator) if denominator else 0.0,
           "accuracy": float(hits / n) if n else 0.0,
           "f1": float(f1[present].mean()) if present.any() else 0.0}
    if len(c) == 2:
        out.update({"tp": int(c[1, 1]), "tn": int(c[0, 0]), "fp": int(c[0, 1]), "fn": int(c[1, 0])})
    return out


def pearson_from_moments(m: np.ndarray) -> float:
    n, sx, sy, sxx, syy, sxy = (float(v) for v in m)
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    return cov / math.sqrt(vx * vy) if n and vx > 0 and vy > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (ties get their average rank)."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    return pearson_from_moments(np.array([len(rx), rx.sum(), ry.sum(), rx @ rx, ry @ ry, rx @ ry]))


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    values, inverse = np.unique(v, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse]
