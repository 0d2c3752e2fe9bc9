"""Dropout on the CPU (`hardware.cpu_dropout`): masks from 16-bit slices of the generator's 64-bit draws instead of
torch's `bernoulli_`. The drop rate, the scale, the gradient and the seeding are those of dropout; every case it
does not cover runs torch's own; and a training step really draws its masks this way."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lmcore.training import hardware
from lmcore.training.precision import Precision
from lmcore.training.train import Stepper, train_step


def _dropout(x, p, **kw):
    with hardware.cpu_dropout(torch.device("cpu")):
        return torch.nn.functional.dropout(x, p, **kw)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_drop_rate_and_the_scale_are_dropouts(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # the last 64-bit draw is three quarters used
    y = _dropout(x, p)
    exact = round(p * 2**hardware.DROP_BITS) / 2**hardware.DROP_BITS
    assert abs(exact - p) < 2**-hardware.DROP_BITS
    dropped = (y == 0).double().mean().item()
    sd = (exact * (1 - exact) / x.numel()) ** 0.5
    assert abs(dropped - exact) < 5 * sd, f"dropped {dropped:.5f}, wanted {exact:.5f} +- {5 * sd:.5f}"
    kept = y[y != 0]
    assert torch.all(kept == torch.tensor(1 / (1 - exact), dtype=torch.float32))
    assert abs(y.double().mean().item() - 1.0) < 6 * sd / (1 - exact)  # the expectation is kept


def test_the_gradient_is_the_mask_times_the_scale_and_the_seed_replays():
    torch.manual_seed(3)
    x = torch.randn(4, 33, 17, requires_grad=True)
    y = _dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    scale = 1 / (1 - round(0.2 * 2**16) / 2**16)
    assert torch.allclose(x.grad, (y != 0).float() * scale)
    assert torch.allclose(y, torch.where(y != 0, x * scale, 0).detach())
    torch.manual_seed(3)
    x2 = torch.randn(4, 33, 17)
    assert torch.equal(_dropout(x2, 0.2), y.detach())  # same seed, same mask
    assert not torch.equal(_dropout(x2, 0.2), y.detach())  # the generator moved on


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_bf16_mask_serves_both_dtypes_and_backward_sees_the_forwards_mask(dtype):
    """The mask is kept in bf16 (0 and 1 are exact there) and the scale applied in the input's dtype, as torch's
    dropout rounds it: kept values are round(x * scale) in that dtype, and the gradient is the same mask."""
    torch.manual_seed(5)
    x = (torch.randn(8, 4, 64, 64) + 3).to(dtype).requires_grad_()
    y = _dropout(x, 0.1)
    assert y.dtype == dtype
    scale = 1 / (1 - round(0.1 * 2**16) / 2**16)
    kept = y != 0
    assert 0.09 < 1 - kept.float().mean().item() < 0.11
    assert torch.equal(y[kept], x.detach()[kept].mul(scale))
    assert [t.dtype for t in y.grad_fn.saved_tensors] == [torch.bfloat16]  # the mask alone, 2 bytes an element
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, torch.where(kept, g.mul(scale), 0))


def test_what_it_does_not_cover_runs_as_before():
    x = torch.randn(64, 64)
    assert _dropout(x, 0.3, training=False) is x
    assert torch.equal(_dropout(x, 0.0), x)
    assert torch.equal(_dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(1)
    native = torch.nn.functional.dropout(x.clone(), 0.3, inplace=True)
    torch.manual_seed(1)
    assert torch.equal(_dropout(x.clone(), 0.3, inplace=True), native)  # in place: torch's own kernel
    with hardware.cpu_dropout(torch.device("cpu")):
        assert torch.equal(torch.nn.Dropout(0.3).eval()(x), x)
    assert isinstance(hardware.cpu_dropout(torch.device("cuda")), type(__import__("contextlib").nullcontext()))
    for p in (1e-6, 1 - 1e-6):  # beyond 16 bits' reach: torch's kernel, not a division by zero or no dropout
        torch.manual_seed(2)
        native = torch.nn.functional.dropout(x, p)
        torch.manual_seed(2)
        assert torch.equal(_dropout(x, p), native)


class Sum:
    terms = ("lm",)
    weights = {"lm": 1.0}

    def loss_sums(self, module, prepared):
        return {"lm": module(prepared["x"]).sum()}


def test_a_training_step_draws_its_masks_this_way():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1)
    s = Stepper(module=module, objective=Sum(), optimizer=optimizer, trained=list(module.parameters()), clip=1.0,
                device=torch.device("cpu"), precision=Precision("cpu"), term_weights=torch.ones(1), scaler=None,
                stepping="on host")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(s, [{"x": torch.ones(4, 8), "counts": {"lm": 4}}])
    ops = {e.key for e in prof.key_averages()}
    assert "aten::random_" in ops and "aten::bernoulli_" not in ops, sorted(ops)
