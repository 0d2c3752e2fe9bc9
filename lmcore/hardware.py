"""What the hardware runs fast, decided once: autocast dtype, attention kernel, fused optimizer.

Measured on a 2-core AVX512-BF16 CPU with the bench model (BERT, hidden 256, 4 layers, block 128, batch 32):
bf16 autocast 2.4x fp32 per step, eager attention ~10% faster than SDPA at this size, fused AdamW a few % faster,
GPT-2's `gelu_new` as one tanh-GELU kernel instead of five elementwise passes.
Where the CPU has no native bf16 (no AVX512-BF16 / AMX), autocast would emulate it slowly: full fp32 then.
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype for `mixed_precision=mode` on `device` (None: full fp32)."""
    if mode == "no":
        return None
    if device.type == "cuda":
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if mode == "auto":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return torch.bfloat16  # fp16 autocast on the CPU is not worth having: bf16 has the same speed and range


def autocast(device: torch.device, mode: str):
    dtype = autocast_dtype(device, mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, mode: str) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return autocast_dtype(device, mode) == torch.float16


def choose_attention(model: torch.nn.Module, device: torch.device) -> None:
    """Eager attention on the CPU (faster than SDPA at the sizes trained here); the library default elsewhere."""
    if device.type == "cpu":
        for module in model.modules():
            if hasattr(module, "set_attn_implementation") and hasattr(module, "config"):
                module.set_attn_implementation("eager")


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


@functools.lru_cache(maxsize=4)
def matmul_peak_flops(device_type: str, dtype_name: str) -> float:
    """Measured dense matmul FLOP/s on this device in this dtype (a few 1024^3 products, ~0.1-0.5 s once): the
    denominator of model FLOPs utilisation."""
    import time

    dtype = getattr(torch, dtype_name)
    n = 1024
    # Constant operands: drawing random ones would move the global RNG, and with it every dropout mask after a
    # resume (the peak is measured once per process, so only a resumed process would draw).
    a = torch.full((n, n), 0.5, device=device_type, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device_type, dtype=dtype)
    (a @ b).sum().item()
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < 0.1:
        c = a @ b
        reps += 1
    c.sum().item()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def flops_per_token(model: torch.nn.Module, block: int, scored_fraction: float) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) for every matrix except the embedding lookups,
    the vocabulary projection counted only for the scored share of positions (masked LM scores ~15%), plus the
    attention scores and mixing (12 x layers x hidden x block)."""
    matrices, counted = 0, set()
    for name, p in model.named_parameters():
        if p.dim() < 2 or "embeddings" in name or name.endswith(("wte.weight", "wpe.weight", "tokens_embed.weight",
                                                                  "positions_embed.weight")):
            continue
        matrices += p.numel()
        counted.add(id(p))
    vocab_proj, attention = 0, 0
    for module in model.modules():
        prefix, cfg = getattr(module, "base_model_prefix", None), getattr(module, "config", None)
        if not prefix or cfg is None or getattr(module, prefix, None) is None:
            continue  # not a model-with-head (BertForMaskedLM, GPT2LMHeadModel, ElectraForPreTraining, ...)
        layers = getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layer", getattr(cfg, "n_layers", 0)))
        hidden = getattr(cfg, "hidden_size", getattr(cfg, "n_embd", getattr(cfg, "dim", 0)))
        attention += 12 * layers * hidden * block
        out = module.get_output_embeddings()
        if out is not None:
            if id(out.weight) in counted:  # an untied output matrix: counted by its scored share instead
                matrices -= out.weight.numel()
            vocab_proj += out.weight.numel()
    return 6 * (matrices + vocab_proj * scored_fraction) + attention
