"""Evaluation: token-weighted perplexity, exp(total loss / total scored tokens) over the whole eval set.

Batches are fixed (examples in file order) and the masks of batch b come from a generator seeded with (seed, b), so
two evaluations of the same model agree exactly, whatever the number of processes: rank r scores batches
r, r + world, ... and the sums are added over ranks.
"""

from __future__ import annotations

import math

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
    sums: dict[str, float] = {}
    n = len(features)
    for b in range(dist.rank(), math.ceil(n / batch_size), dist.world()):
        batch = collate(features, range(b * batch_size, min((b + 1) * batch_size, n)), pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = objective.eval_sums(model, batch, batch_generator(seed, EVAL_SEED_SALT, b))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    keys = sorted(objective.eval_sum_keys())
    totals = dict(zip(keys, dist.sum_([sums.get(k, 0.0) for k in keys], device)))
    model.train(was_training)
    return objective.eval_metrics(totals)
