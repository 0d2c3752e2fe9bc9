"""What the hardware runs fast, decided once: attention kernel, fused activations; and what it can do (measured
matmul peak, FLOPs a model executes), the figures behind the utilisation the progress lines show. The compute dtype
itself is `lmcore.training.precision`'s.

Measured on 2-core CPUs with the bench model (BERT, hidden 256, 4 layers, block 128, batch 32; bench/RESULTS.md):
eager attention (`choose_attention`); fused AdamW a few % faster; GPT-2's `gelu_new` as one
tanh-GELU kernel instead of five elementwise passes; dropout masks from 16-bit slices of 64-bit draws on the CPU
(`cpu_dropout`), applied by arithmetic, never a boolean kernel, where torch's `bernoulli_` was 22-27% of a bf16 step
(bench/RESULTS.md, the profile section).
"""

from __future__ import annotations

import functools

import torch

from .precision import Precision


def choose_attention(model: torch.nn.Module, precision: Precision) -> str:
    """The attention kernel for the run's device and compute dtype (returned). On the CPU eager attention, in every
    dtype, by what the bench measured through the engine at the sizes trained here (bench/RESULTS.md, the CPU
    kernel section): under bf16 autocast SDPA's CPU kernel runs its softmax in fp32 on converted copies (eager
    1.07-1.19x faster); in fp32 SDPA's training kernel draws its dropout mask with torch's `bernoulli_`, outside
    the engine's cheaper masks (`cpu_dropout`), so on an AVX2-only CPU eager trains BERT 1.07-1.18x and GPT-2
    1.09-1.10x faster per step (ELECTRA level within noise), and is level or faster where torch runs AVX-512
    kernels. Elsewhere the library's default."""
    if precision.device_type != "cpu":
        return "default"
    return set_attention(model, "eager")


def set_attention(model: torch.nn.Module, kernel: str) -> str:
    """Every submodel of `model` (ELECTRA's generator and discriminator, a wrapper's inner model) on `kernel`
    ("eager", "sdpa"); returns it."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation") and hasattr(module, "config"):
            try:
                module.set_attn_implementation(kernel)
            except (ValueError, ImportError):  # a model class without that kernel keeps its own
                pass
    return kernel


class TanhGELU(torch.nn.Module):
    """GELU, tanh approximation, as one fused kernel (forward and backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x, approximate="tanh")


def fuse_activations(model: torch.nn.Module) -> int:
    """Swap transformers' `gelu_new` (GPT-2's default activation: five elementwise ops, each a pass over memory)
    for the same function in one kernel; nothing saved changes. Returns how many modules were swapped."""
    from transformers.activations import NewGELUActivation

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, TanhGELU())
                swapped += 1
    return swapped


DROP_BITS = 16
"""The drop probability's resolution: a mask element is dropped when its 16 random bits fall under round(p * 2**16),
so p = 0.1 drops with probability 0.100006; kept values are scaled by the inverse of that exact keep rate."""


def dropout_keep_mask(shape: torch.Size, p: float, device: torch.device,
                      dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, float]:
    """(keep, scale): a mask of `shape` in `dtype` holding 1 (kept, probability 1 - p', p' = p at 16 bits) or 0,
    and 1 / (1 - p'). Four mask elements per 64-bit draw of the default generator, each kept when its 16 bits, read
    as a signed number, reach a threshold; the 0/1 values come from a clamp, not a comparison: on the CPU torch's
    kernels that read or write booleans are 5-15x slower than arithmetic on 16-bit numbers (bench/RESULTS.md,
    the dropout section). Seeded and resumed like every other draw of the generator (the masks are not those
    torch's kernel would draw from the same seed)."""
    n = torch.Size(shape).numel()
    dropped = round(p * (1 << DROP_BITS))
    threshold = dropped - (1 << (DROP_BITS - 1))  # kept when bits >= threshold: 2**16 - dropped of 2**16 values
    # Out of place: dynamo cannot trace an in-place draw (Tensor.random_), and a graph break at every dropout would
    # cut a compiled body into fragments inductor cannot fuse across. The range leaves out one of 2**64 values.
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    keep = bits.view(torch.int16)[:n].clamp_(threshold - 1, threshold).sub_(threshold - 1)
    return keep.to(dtype).view(shape), (1 << DROP_BITS) / ((1 << DROP_BITS) - dropped)


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale, and the gradient g * keep * scale. The mask is kept in bf16 (exact for 0 and 1) for an
    fp32 input: half the memory of an fp32 copy, one cheap conversion in each direction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        stored = torch.bfloat16 if x.dtype == torch.float32 else x.dtype
        keep, scale = dropout_keep_mask(x.shape, p, x.device, stored)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep.to(x.dtype)).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad * keep.to(grad.dtype)).mul_(ctx.scale), None


def _fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return _MaskedScale.apply(x, p)


class _CpuDropout(torch.overrides.TorchFunctionMode):
    """Routes `torch.nn.functional.dropout` (every `nn.Dropout` module and the attention kernels' own call) to
    `_fast_dropout` when it would draw a mask on the CPU; every other call, and every case it does not cover
    (evaluation, p of 0 or 1, in-place dropout, integer tensors), runs as it was."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            bound = dict(zip(("input", "p", "training", "inplace"), args), **kwargs)
            x, p = bound["input"], bound.get("p", 0.5)
            # A p too close to 0 or 1 for 16 bits (below 2**-17 from either end) keeps torch's kernel.
            if bound.get("training", True) and not bound.get("inplace", False) and \
                    0 < round(p * (1 << DROP_BITS)) < (1 << DROP_BITS) and x.device.type == "cpu" and \
                    x.is_floating_point():
                return _fast_dropout(x, p)
        return func(*args, **kwargs)


def cpu_dropout(device: torch.device):
    """A context for one training forward pass: dropout masks drawn by `dropout_keep_mask` on the CPU; on any other
    device torch's own fused kernels (CUDA draws them in-kernel) and nothing changes."""
    import contextlib

    return _CpuDropout() if torch.device(device).type == "cpu" else contextlib.nullcontext()


@functools.lru_cache(maxsize=4)
def matmul_peak_flops(device_type: str, dtype_name: str, bursts: int = 5) -> float:
    """Measured dense matmul FLOP/s on this device in this dtype, the best of several short bursts of 1024^3
    products (another process on the cores only lowers a burst, so the best is the closest to the machine's
    peak): the denominator of model FLOPs utilisation. Measured once per process, before training."""
    import time

    from .precision import cpu_has_native_bf16

    dtype = getattr(torch, dtype_name)
    # bf16 on a CPU without it is emulated (~1 GFLOP/s): a 1024^3 product would take seconds a burst there.
    n = 256 if device_type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16() else 1024
    # Constant operands: drawing random ones would move the global RNG, and with it every dropout mask after a
    # resume (the peak is measured once per process, so only a resumed process would draw).
    a = torch.full((n, n), 0.5, device=device_type, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device_type, dtype=dtype)
    (a @ b).sum().item()
    best = 0.0
    for _ in range(bursts):
        reps, start = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - start < 0.05:
            c = a @ b
            reps += 1
        c.sum().item()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def _addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of (self +)= a @ b: a multiply and an add for each of M x K x N (arguments come as shapes)."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def measured_flops_per_position(module: torch.nn.Module, objective, prepared: dict) -> float:
    """Training FLOPs executed per position of a batch (padding included: the kernels run over it too), counted
    by PyTorch's FLOP counter over one forward and backward pass of the training module on the first example of
    `prepared` (a device batch): every matmul and attention kernel the model really runs, the vocabulary
    projection only where the objective scores. Times the positions a window ran, over its seconds and the
    measured peak, this is the hardware FLOPs utilisation the progress lines show. Counting per real token
    instead would charge a short first example's padding to every later token (utilisation over 100%). Random
    state and gradients are left as they were."""
    from torch.utils.flop_counter import FlopCounterMode

    # The first row of every (B, ...) tensor; the host's flattened positions ("*_index") describe the whole batch,
    # so the first example goes by its boolean masks instead.
    one = {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in prepared.items()
           if not k.endswith("_index")}
    devices = [one["input_ids"].device] if one["input_ids"].device.type == "cuda" else []
    # The counter knows addmm, not its in-place form, which the chunked vocabulary loss accumulates the head's
    # fp32 weight gradient with: a third of a causal head's FLOPs would go uncounted.
    in_place = {torch.ops.aten.addmm_: _addmm_flops}
    with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        sums = objective.loss_sums(module, one)
        torch.stack([v.float() for v in sums.values()]).sum().backward()
    for p in module.parameters():
        p.grad = None
    return counter.get_total_flops() / max(one["input_ids"].numel(), 1)
