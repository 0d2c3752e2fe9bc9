"""Evaluation: token-weighted perplexity, exp(total loss / total scored tokens) over the whole eval set.

Batches are fixed (examples in file order) and the masks of batch b come from a generator seeded with (seed, b), so
two evaluations of the same model agree exactly, whatever the number of processes: rank r scores batches
r, r + world, ... and the sums are added over ranks. With sliding-window features each batch carries a score_mask,
so the context a window shares with the previous one is not scored twice.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from . import dist
from ..data.batches import collate
from ..data.features import Features
from ..base.host import to_device
from ..objectives.language import Objective
from .precision import Precision

EVAL_SEED_SALT = 7919
PROGRESS_SECONDS = 30
log = logging.getLogger(__name__)


def batch_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of (seed, parts): replayable masks and samples."""
    g = torch.Generator()
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**63 - 1)
    return g.manual_seed(value)


@torch.no_grad()
def evaluate(model, objective: Objective, features: Features, batch_size: int, pad_id: int, device, seed: int,
             precision: Precision) -> dict:
    # Put back each submodule's own mode afterwards: a wrapper built just for this call is in training mode even
    # when the model inside it was not, and model.train(was_training) would switch dropout on in that model.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    shapes = objective.eval_sum_shapes()
    sums = {k: np.zeros(shape) for k, shape in shapes.items()}
    n = len(features)
    batches = range(dist.rank(), math.ceil(n / batch_size), dist.world())
    start = last = time.time()
    for done, b in enumerate(batches, 1):
        batch = collate(features, range(b * batch_size, min((b + 1) * batch_size, n)), pad_id, score=True)
        prepared = to_device(objective.prepare(batch, lambda i: batch_generator(seed, EVAL_SEED_SALT, i)), device)
        with precision.autocast():
            out = objective.eval_sums(model, prepared)
        for k, v in out.items():
            sums[k] = sums[k] + np.asarray(v, dtype=np.float64)
        if dist.is_main() and time.time() - last > PROGRESS_SECONDS:
            last = time.time()
            rate = done / (last - start)
            log.info("Evaluating: batch %d/%d (%.0f%%), %.1f batches/s, ETA %.0fs", done, len(batches),
                     100 * done / len(batches), rate, (len(batches) - done) / rate)
    totals = _sum_over_ranks(shapes, sums, device)
    for m, mode in modes:
        m.training = mode
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
