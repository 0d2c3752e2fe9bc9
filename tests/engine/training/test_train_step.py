"""`train.train_step` alone, in each of its stepping modes: a finite step is applied, a non-finite one is not (and
only "on host" stepping says so on the host). The grad-scaler mode runs here with torch's CPU GradScaler: the
branch CUDA fp16 takes, without a GPU."""

import math

import pytest
import torch

from lmcore.training.precision import Precision
from lmcore.training.train import Stepper, train_step


class Sum:
    """One loss term: the module's outputs summed, times the batch's `scale` (nan poisons the step)."""

    terms = ("lm",)
    weights = {"lm": 1.0}

    def loss_sums(self, module, prepared):
        return {"lm": module(prepared["x"]).sum() * prepared["scale"]}


def stepper(stepping: str) -> Stepper:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1, fused=stepping == "on device")
    return Stepper(module=module, objective=Sum(), optimizer=optimizer, trained=list(module.parameters()),
                   clip=1.0, device=torch.device("cpu"), precision=Precision("cpu"), term_weights=torch.ones(1),
                   scaler=torch.amp.GradScaler("cpu") if stepping == "grad scaler" else None, stepping=stepping)


def micro(scale: float) -> list[dict]:
    return [{"x": torch.ones(2, 3), "scale": torch.tensor(scale), "counts": {"lm": 2}} for _ in range(2)]


@pytest.mark.parametrize("stepping", ["grad scaler", "on device", "on host"])
def test_a_finite_step_is_applied_and_a_non_finite_one_is_not(stepping):
    s = stepper(stepping)
    start = [p.detach().clone() for p in s.trained]
    loss_before = 2 * s.module(torch.ones(2, 3)).sum().item()
    done = train_step(s, micro(1.0))
    assert not bool(done.bad) and not done.refused
    assert done.sums.tolist() == pytest.approx([loss_before])  # both micro-batches, before the step
    assert done.totals.tolist() == [4.0]  # two micro-batches of two scored rows
    moved = [p.detach().clone() for p in s.trained]
    assert not all(torch.equal(a, b) for a, b in zip(start, moved))

    done = train_step(s, micro(math.nan))
    assert bool(done.bad) and done.refused == (stepping == "on host")
    assert all(torch.equal(a, b) for a, b in zip(moved, s.trained))
    assert all(p.grad is None for p in s.trained)
