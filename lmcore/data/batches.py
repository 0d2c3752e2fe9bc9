"""The batches drawn from tokenized examples (lmcore.data.features.Features): each epoch's order, a step's micro-batches
cut into chunks of similar length, and the padded tensors of a batch.

Data order is a pure function of (seed, epoch): resume needs only the position, and every rank derives its shard.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .features import Features


def epoch_batches(features: Features, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  group_by_length: bool = False, accumulate: int = 1) -> list[np.ndarray]:
    """This rank's micro-batches (arrays of example indices) for one epoch, a pure function of (seed, epoch);
    each `accumulate` consecutive ones make one optimizer step.

    Step batches of `batch_size * world * accumulate` examples are cut from one shuffled order, then split into
    `accumulate` micro-batches and each of those into one slice per rank. So the examples of a step are the same
    however they are split (32 x 1, 8 x 4 accumulation, 16 x 2 processes) and the processes together see every
    example once. With several processes the last step batch is filled up by wrapping around, so no rank is left
    without work. `group_by_length` sorts examples by length inside windows of 50 step batches before cutting
    (then shuffles the step batches), so each batch holds lines of similar length and padding stays small.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(features)
    order = rng.permutation(n)
    per_micro = batch_size * world
    per_step = per_micro * accumulate
    if group_by_length:
        lengths = features.lengths()
        window = per_step * 50
        order = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                                for w in np.array_split(order, max(1, math.ceil(n / window)))])
    steps = [order[i:i + per_step] for i in range(0, n, per_step)]
    if group_by_length:
        steps = [steps[i] for i in rng.permutation(len(steps))]
    if world > 1 and steps and len(steps[-1]) % per_micro:
        steps[-1] = np.resize(np.concatenate([steps[-1], order]), math.ceil(len(steps[-1]) / per_micro) * per_micro)
    return [step[i:i + per_micro][rank::world] for step in steps for i in range(0, len(step), per_micro)]


def split_by_length(lengths: np.ndarray, indices, most: int = 4) -> list[list[int]]:
    """A micro-batch's examples as up to `most` chunks of similar length, each to be padded only to its own
    longest, where that saves padding: one long text (a plot summary among review snippets) no longer pads every
    other example of its batch to its length. The step's examples, their masks (seeded per example) and the
    step's loss (each term summed, then divided by the step's counts) are the same however the batch is cut; only
    the padded positions computed change. A chunk must save at least two of the longest rows' worth of padding
    (what another, smaller forward and backward pass costs); equal lengths (blocks of `simple`) stay one chunk.
    Deterministic: sorted by (length, example number)."""
    order = sorted((int(i) for i in indices), key=lambda i: (int(lengths[i]), i))
    chunks = [order]
    overhead = 2 * int(lengths[order[-1]]) if order else 0
    while len(chunks) < most:
        best = None  # (saving, chunk number, cut)
        for c, chunk in enumerate(chunks):
            sizes = np.array([int(lengths[i]) for i in chunk])
            m = len(sizes)
            if m < 2:
                continue
            cuts = np.arange(1, m)
            cost = cuts * sizes[cuts - 1] + (m - cuts) * sizes[-1]  # first part padded to its longest, then the rest
            j = int(np.argmin(cost))
            saving = m * int(sizes[-1]) - int(cost[j]) - overhead
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, c, int(cuts[j]))
        if best is None:
            break
        _, c, cut = best
        chunks[c:c + 1] = [chunks[c][:cut], chunks[c][cut:]]
    return chunks


def collate(features: Features, indices, pad_id: int, score: bool = False) -> dict[str, torch.Tensor]:
    """Pad examples to the longest in the batch: input_ids and attention_mask, shape (batch, length), and each
    row's example number (`index`, what its masks are seeded by).

    With `score` (evaluation) and sliding-window features, also `score_mask` (batch, length) bool: the positions
    to score, i.e. not padding and not the context a previous window already scored, so each token counts once.
    Training leaves it out and learns from every token of every window.

    Labelled features add `labels` (batch,) and, for text pairs, `token_type_ids` (batch, length)."""
    indices = [int(i) for i in indices]
    examples = [features.example(i) for i in indices]
    length = max(len(e) for e in examples)
    ids = np.full((len(examples), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), length), dtype=np.int64)
    for row, e in enumerate(examples):
        ids[row, :len(e)] = e
        mask[row, :len(e)] = 1
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "index": torch.tensor(indices, dtype=torch.int64)}
    if score and features.score_from is not None:
        keep = mask.astype(bool)
        start = int(features.meta.get("prefix_tokens", 0))
        for row, i in enumerate(indices):
            keep[row, start:start + int(features.score_from[i])] = False
        batch["score_mask"] = torch.from_numpy(keep)
    if features.labels is not None:
        batch["labels"] = torch.from_numpy(features.labels[indices])
    if features.second_from is not None:
        second = np.arange(length)[None, :] >= features.second_from[indices][:, None]
        batch["token_type_ids"] = torch.from_numpy((second & mask.astype(bool)).astype(np.int64))
    return batch
