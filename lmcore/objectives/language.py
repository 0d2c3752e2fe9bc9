"""The pre-training objectives as small pure functions over tensors, and `Objective`: what the training loop
and the evaluator ask of any objective (MLM and CLM here, ELECTRA in `lmcore.objectives.electra`, sequence
classification in `lmcore.objectives.classify`).

Shapes: B = batch, T = tokens per example, V = vocabulary. Labels use -100 for "not scored" (the PyTorch and
Hugging Face convention).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

IGNORE = -100
HEAD_CHUNK_ROWS = {torch.float32: 512, torch.bfloat16: 256}
"""Rows of hidden states projected onto the vocabulary at a time by `linear_loss_sum`, by the dtype the head
computes in (other dtypes: bf16's). Each the fastest measured on the bench's GPT-2 (8,000-token vocabulary): bf16
256 of 128/256/512 (AVX512-BF16 CPU); fp32 512 of 128/256/512/1024 (AVX2-only CPU: the head's forward and backward
374 ms against 404 at 256, median of 5 interleaved rounds; a product of 256 rows runs the matmul at ~125 GFLOP/s,
512 at ~140). 512 rows x 8000 fp32 logits = 16 MB."""


def maskable(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: real tokens that may be masked (not padding, not [CLS]/[SEP]/<s>/... )."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids)


def row_draws(generators, lengths: torch.Tensor, width: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """Random numbers for a batch, (B, width) each, drawn row by row: row i from `generators[i]` (seeded by that
    example's number), over its own length only (padding gets zeros). So an example is masked the same way
    whatever batch, micro-batch or process it lands in, and however much its batch is padded."""
    out = {"select": torch.zeros(len(generators), width), "kind": torch.zeros(len(generators), width),
           "random_ids": torch.zeros(len(generators), width, dtype=torch.long),
           "sample": torch.zeros(len(generators), width)}
    for row, (g, n) in enumerate(zip(generators, (int(n) for n in lengths.numpy()))):
        out["select"][row, :n] = torch.rand(n, generator=g)
        out["kind"][row, :n] = torch.rand(n, generator=g)
        out["random_ids"][row, :n] = torch.randint(vocab_size, (n,), generator=g)
        out["sample"][row, :n] = torch.rand(n, generator=g)
    return out


def mask_tokens(input_ids: torch.Tensor, candidates: torch.Tensor, mask_id: int, probability: float,
                draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. input_ids (B, T) long, candidates (B, T) bool, draws from `row_draws` -> (masked inputs,
    labels), both (B, T).

    Each candidate is selected with `probability`; of the selected, 80% become `mask_id`, 10% a random token and
    10% stay unchanged. Labels hold the original id at selected positions and IGNORE elsewhere. All randomness
    comes from `draws`, so the same seeds always mask the same way (exact resume, seeded eval).
    """
    selected = (draws["select"] < probability) & candidates
    kind = draws["kind"]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    inputs = torch.where(selected & (kind < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(selected & (kind >= 0.8) & (kind < 0.9), draws["random_ids"], inputs)
    return inputs, labels


@runtime_checkable
class Objective(Protocol):
    """An objective in two halves, so the training loop never waits on the device: `prepare` (host side, on a
    collated batch: inputs, labels and how much each loss term scores) and `loss_sums` (device side: each term's
    summed loss). The loop divides each sum by its term's count over the whole optimizer step (all micro-batches,
    all processes), so every scored token (or example) weighs the same whatever the batching; the step's loss is
    the `weights`-weighted sum of the terms. Evaluation adds `eval_sums` over batches and processes (arrays of
    `eval_sum_shapes`) and turns the totals into results with `eval_metrics`."""

    terms: tuple[str, ...]
    """The loss terms, in the order the loop stacks them."""
    weights: dict[str, float]
    """Each term's weight in the step's loss."""

    def prepare(self, batch: dict, generator_for: Callable[[int], torch.Generator]) -> dict:
        """Host side: the model's inputs and `counts` (term -> what it scores). `generator_for(example number)`
        gives the generator that example's random draws come from (replayable on resume)."""
        ...

    def loss_sums(self, model: torch.nn.Module, prepared: dict) -> dict[str, torch.Tensor]:
        """Device side: term -> summed loss over what it scores in this batch."""
        ...

    def eval_sum_shapes(self) -> dict[str, tuple]:
        ...

    def eval_sums(self, model: torch.nn.Module, prepared: dict) -> dict:
        ...

    def eval_metrics(self, totals: dict) -> dict:
        ...


def draws_for(batch: dict, generator_for, vocab_size: int) -> dict[str, torch.Tensor]:
    """`row_draws` for a collated batch: each row from the generator of its example number (`batch["index"]`),
    over its real tokens. Shared by every masking objective (MLM, ELECTRA), so both mask an example alike."""
    generators = [generator_for(int(i)) for i in batch["index"]]
    return row_draws(generators, batch["attention_mask"].sum(1), batch["input_ids"].shape[1], vocab_size)


def host_facts(attention_mask: torch.Tensor, **scored: torch.Tensor) -> dict:
    """What the host knows about a batch before it goes to the device, so that the device-side step never reads a
    value back (each read waits for the device to finish everything queued: on a GPU, a stall per read): whether
    any position is padding (without padding the model gets no attention mask, so transformers skips its own
    `mask.all()` check, a read), and, for each boolean (B, T) mask in `scored`, its positions in the flattened
    batch as "<name>_index" (indexing with them gathers the same rows, in the same order, as the boolean mask, with
    no read of how many there are)."""
    out = {"padded": not bool(attention_mask.all())}
    for name, mask in scored.items():
        out[f"{name}_index"] = mask.reshape(-1).nonzero().squeeze(1)
    return out


READS_IDS_WITHOUT_MASK = frozenset({"gpt2", "openai-gpt", "longformer"})
"""Model types whose transformers forward, given no attention mask, reads the input ids back to warn about padding
(`warn_if_padding_and_no_attention_mask`): a read either way, and a spurious warning where a block starts or ends
with the padding token; they keep their mask."""


def mask_for(body: torch.nn.Module, attention_mask: torch.Tensor, padded: bool) -> torch.Tensor | None:
    """The attention mask to give `body` (a transformers base model): None for a batch without padding (the same
    attention: transformers drops an all-ones mask itself, after reading it back), except where the model reads
    its ids without one (READS_IDS_WITHOUT_MASK) and where the body is compiled: there the check costs nothing
    (transformers skips it while tracing), and a mask that is sometimes None would compile the body again."""
    if padded or body.config.model_type in READS_IDS_WITHOUT_MASK or \
            getattr(body, "_compiled_call_impl", None) is not None:
        return attention_mask
    return None


def rows_at(x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x[mask] for a (B, T, ...) x and a (B, T) boolean mask, through `index` (its flattened positions, from
    `host_facts`) when the host gave it."""
    return x[mask] if index is None else x.flatten(0, 1).index_select(0, index)


def causal_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) labels for next-token prediction: the inputs themselves, padding ignored (models shift by one)."""
    return input_ids.masked_fill(attention_mask == 0, IGNORE)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and the number of scored tokens. logits (B, T, V) or (N, V); labels (B, T) or (N,).

    With `causal`, position t predicts label t + 1. Returning (sum, count) rather than a mean lets evaluation
    weight every token equally across batches of different sizes (true token-level perplexity).
    """
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    count = (labels != IGNORE).sum()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, count


def head_chunk_rows(dtype: torch.dtype) -> int:
    return HEAD_CHUNK_ROWS.get(dtype, HEAD_CHUNK_ROWS[torch.bfloat16])


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `labels` (all scored), a chunk of rows at a
    time: the forward pass also computes the gradients chunk by chunk, so the (N, V) logits, their fp32 copy and
    the softmax are never held whole (on CPU those passes over memory cost more than the matmul itself). One exp
    per logit, the fp32 weight gradient accumulated in place and 512-row fp32 chunks: together the head's forward
    and backward ~14% faster than a log-sum-exp then a second exp, a (V, H) product added per chunk and 256-row
    chunks (GPT-2 at the bench's shapes, fp32, AVX2-only CPU; the chunk size alone is about half of it, see
    HEAD_CHUNK_ROWS). The gradients are computed once, here: a second derivative is refused, not silently wrong.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, dtype):
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
            grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=h.device) if bias is not None \
                else None
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            chunk = head_chunk_rows(dtype)
            rows = torch.arange(chunk, device=h.device)
            for i in range(0, h.shape[0], chunk):
                hc, lc = h[i:i + chunk], labels[i:i + chunk]
                logits = F.linear(hc, w, b).float()
                picked = logits.gather(1, lc[:, None])[:, 0]
                # The softmax in place, with one exp per logit (the log-sum-exp comes from the same sums).
                top = logits.amax(1, keepdim=True)
                g = logits.sub_(top).exp_()
                sums = g.sum(1, keepdim=True)
                g.div_(sums)
                loss += (sums[:, 0].log_() + top[:, 0] - picked).sum()
                g[rows[:g.shape[0]], lc] -= 1
                if grad_b is not None:
                    grad_b += g.sum(0)
                g = g.to(dtype)
                torch.mm(g, w, out=grad_h[i:i + chunk])
                if dtype == torch.float32:  # accumulated by the product itself, no (V, H) temporary
                    grad_w.addmm_(g.t(), hc)
                else:
                    grad_w += torch.mm(g.t(), hc)
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else grad_w.new_empty(0))
        ctx.has_bias = bias is not None
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return ((grad_h * grad_out).to(ctx.dtypes[0]), (grad_w * grad_out).to(ctx.dtypes[1]),
                (grad_b * grad_out).to(ctx.dtypes[2]) if ctx.has_bias else None, None, None)


def linear_loss_sum(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                    scored_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy of head(hidden) against labels, scored tokens); hidden (N, H), labels (N,).
    Rows labelled IGNORE are dropped first (through `scored_index`, their complement, when the host gave it); the
    vocabulary projection runs a chunk of rows at a time."""
    scored = labels != IGNORE
    if scored_index is None:
        hidden, labels = hidden[scored], labels[scored]
    else:
        hidden, labels = hidden.index_select(0, scored_index), labels.index_select(0, scored_index)
    count = scored.sum()
    if torch.is_grad_enabled():
        dtype = _compute_dtype(hidden.device, head.weight)
        return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, labels, dtype), count
    loss = hidden.new_zeros((), dtype=torch.float32)
    chunk = head_chunk_rows(_compute_dtype(hidden.device, head.weight))
    for i in range(0, hidden.shape[0], chunk):
        logits = head(hidden[i:i + chunk]).float()
        loss = loss + F.cross_entropy(logits, labels[i:i + chunk], reduction="sum")
    return loss, count


class LanguageModelForTraining(torch.nn.Module):
    """A Hugging Face LM whose forward returns (summed loss, scored tokens): the one module that training and
    evaluation call (and that DistributedDataParallel wraps). With a `masked_head`, MLM projects only the masked
    positions onto the vocabulary: the output layer is a large share of a small model's FLOPs and ~85% of its
    positions carry no label."""

    def __init__(self, model, causal: bool, masked_head=None):
        super().__init__()
        self.model, self.causal, self.masked_head = model, causal, masked_head

    def forward(self, input_ids, attention_mask, labels, scored_index=None, padded: bool = True):
        """`scored_index`: the flattened positions of the scored labels (`host_facts`; for a causal model, of
        labels[:, 1:]). `padded`: whether any position is padding (`host_facts`; see `mask_for`)."""
        attention_mask = mask_for(self.model.base_model, attention_mask, padded)
        if self.causal and isinstance(self.model.get_output_embeddings(), torch.nn.Linear):
            # The causal head is one linear layer over the base model's output (GPT-2, GPT): project and score
            # in chunks instead of materialising (B, T, V) logits.
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
            return linear_loss_sum(hidden[:, :-1].reshape(-1, hidden.shape[-1]),
                                   self.model.get_output_embeddings(), labels[:, 1:].reshape(-1), scored_index)
        if self.causal or self.masked_head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            return token_loss_sum(logits, labels, self.causal)
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        scored = labels != IGNORE
        logits = self.masked_head(self.model, rows_at(hidden, scored, scored_index))
        return token_loss_sum(logits, rows_at(labels, scored, scored_index), causal=False)


class LanguageModelObjective:
    """MLM (`causal=False`) or CLM (`causal=True`) on a LanguageModelForTraining (an `Objective`): one term, the
    tokens it scores; `eval_sums` / `eval_metrics` add up over batches and processes into eval_loss and
    perplexity."""

    terms = ("lm",)

    def __init__(self, causal: bool, tokenizer, mlm_probability: float = 0.15):
        self.causal = causal
        self.mlm_probability = mlm_probability
        self.scored_fraction = 1.0 if causal else mlm_probability  # positions that reach the vocabulary layer
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.weights = {"lm": 1.0}
        if not causal and self.mask_id is None:
            raise ValueError("masked language modeling needs a tokenizer with a mask token")

    def inputs_and_labels(self, batch: dict, generator_for) -> tuple[torch.Tensor, torch.Tensor]:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        # Sliding-window evaluation: the overlap with the previous window is context only, so every token of the
        # corpus is scored once (batches for training carry no score_mask: they learn from every token).
        keep = batch.get("score_mask")
        if self.causal:
            labels = causal_labels(ids, attn)
            return ids, labels if keep is None else labels.masked_fill(~keep, IGNORE)
        candidates = maskable(ids, attn, self.special_ids.to(ids.device))
        if keep is not None:
            candidates = candidates & keep
        draws = draws_for(batch, generator_for, self.vocab_size)
        return mask_tokens(ids, candidates, self.mask_id, self.mlm_probability, draws)

    def prepare(self, batch: dict, generator_for) -> dict:
        """Host side: inputs (B, T), attention_mask (B, T), labels (B, T) and the scored-token count per term.
        `generator_for(example number)` gives the generator that example's masks are drawn from."""
        inputs, labels = self.inputs_and_labels(batch, generator_for)
        scored = labels[:, 1:] if self.causal else labels  # a causal model predicts token t + 1 from position t
        facts = host_facts(batch["attention_mask"], scored=scored != IGNORE)
        return {"input_ids": inputs, "attention_mask": batch["attention_mask"], "labels": labels,
                "counts": {"lm": int((scored != IGNORE).sum())}, **facts}

    def loss_sums(self, model, prepared: dict) -> dict:
        """Device side: {"lm": summed cross-entropy over the scored tokens}."""
        loss_sum, _ = model(input_ids=prepared["input_ids"], attention_mask=prepared["attention_mask"],
                            labels=prepared["labels"], scored_index=prepared.get("scored_index"),
                            padded=prepared.get("padded", True))
        return {"lm": loss_sum}

    def eval_sum_shapes(self) -> dict:
        """The sums `eval_sums` returns and their shapes (() for scalars)."""
        return {"loss_sum": (), "tokens": ()}

    def eval_sums(self, model, prepared: dict) -> dict:
        return {"loss_sum": float(self.loss_sums(model, prepared)["lm"]), "tokens": prepared["counts"]["lm"]}

    @staticmethod
    def eval_metrics(totals: dict) -> dict:
        loss = totals["loss_sum"] / max(totals["tokens"], 1)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 700.0)), "eval_tokens": int(totals["tokens"])}
