"""Evaluation: token-weighted perplexity, exp(total loss / total scored tokens) over the whole eval set.

Batches are fixed (examples in file order) and the masks of batch b come from a generator seeded with (seed, b), so
two evaluations of the same model agree exactly, whatever the number of processes: rank r scores batches
r, r + world, ... and the sums are added over ranks. With sliding-window features each batch carries a score_mask,
so the context a window shares with the previous one is not scored twice.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import dist
from .data import Features, collate

EVAL_SEED_SALT = 7919


def batch_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of (seed, parts): replayable masks and samples."""
    g = torch.Generator()
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**63 - 1)
    return g.manual_seed(value)


@torch.no_grad()
def evaluate(model, objective, features: Features, batch_size: int, pad_id: int, device, seed: int,
             autocast) -> dict:
    was_training = model.training
    model.eval()
    shapes = objective.eval_sum_shapes()
    sums = {k: np.zeros(shape) for k, shape in shapes.items()}
    n = len(features)
    for b in range(dist.rank(), math.ceil(n / batch_size), dist.world()):
        batch = collate(features, range(b * batch_size, min((b + 1) * batch_size, n)), pad_id, score=True)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = objective.eval_sums(model, batch, batch_generator(seed, EVAL_SEED_SALT, b))
        for k, v in out.items():
            sums[k] = sums[k] + np.asarray(v, dtype=np.float64)
    totals = _sum_over_ranks(shapes, sums, device)
    model.train(was_training)
    return objective.eval_metrics(totals)



def _sum_over_ranks(shapes: dict, sums: dict, device) -> dict:
    """Add every rank's sums (scalars, or arrays such as histograms) in one collective call."""
    flat = np.concatenate([np.ravel(sums[k]) for k in shapes]) if shapes else np.zeros(0)
    total = np.asarray(dist.sum_(flat.tolist(), device))
    out, at = {}, 0
    for k, shape in shapes.items():
        size = int(np.prod(shape))
        out[k] = float(total[at]) if shape == () else total[at:at + size].reshape(shape)
        at += size
    return out
