"""Precision: what a run computes in, resolved once where the device is chosen into one record (`Precision`) that
the front doors hand whole to the training loop, the evaluator and the progress lines (nanoGPT's `dtype` -> `ctx`
and scaler, decided in one place).

The rule, from `mixed_precision` (and Simple Transformers' `fp16`, which maps into it: False means "no"):
- "no": full fp32.
- CUDA: "auto" takes bf16 where the GPU has it, else fp16 with loss scaling; "bf16" / "fp16" force that dtype.
- CPU: "auto" takes bf16 where the CPU runs it natively (AVX512-BF16 or AMX): measured 1.6-1.7x fp32 per step on
  2-core CPUs (bench/RESULTS.md); elsewhere autocast would emulate bf16 slowly, so full fp32. "bf16" and "fp16"
  both mean bf16 (fp16 autocast on the CPU is not worth having: bf16 has the same speed and fp32's range); asked
  for on a CPU without native bf16 they still mean bf16, with one warning: torch emulates its matmuls there, 1.3
  GFLOP/s against fp32's 163-180 on a 2-core AVX2-only EPYC (bench/peers/matmul_peak.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """What one run computes in, on one kind of device."""

    device_type: str
    """"cpu" or "cuda": where autocast runs."""
    autocast_dtype: torch.dtype | None = None
    """What autocast runs matmuls in; None: no autocast (full fp32)."""
    grad_scaler: bool = False
    """Scale the loss (fp16 autocast): fp16 gradients underflow without it; bf16 has fp32's range and needs none."""

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or torch.float32

    @property
    def name(self) -> str:
        """The dtype's name as progress lines and the matmul peak know it: "bfloat16", "float16", "float32"."""
        return str(self.compute_dtype).removeprefix("torch.")

    def autocast(self):
        """A fresh autocast context for one forward pass (a no-op in full fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)


def mode_of(args) -> str:
    """The `mixed_precision` mode a settings object asks for: Simple Transformers' `fp16=False` means "no"."""
    return "no" if not args.fp16 else args.mixed_precision


def resolve(device: torch.device | str, mode: str) -> Precision:
    """The precision record for `mixed_precision=mode` on `device` (the rule in the module docstring)."""
    device = torch.device(device)
    dtype = _autocast_dtype(device, mode)
    return Precision(device.type, dtype, grad_scaler=dtype == torch.float16)


def for_args(device: torch.device | str, args) -> Precision:
    """`resolve` under a settings object's `mixed_precision` and `fp16`."""
    return resolve(device, mode_of(args))


def _autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    if mode == "no":
        return None
    if device.type == "cuda":
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if mode == "auto":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if not cpu_has_native_bf16():
        _warn_emulated_bf16(mode)
    return torch.bfloat16


@functools.lru_cache(maxsize=None)
def _warn_emulated_bf16(mode: str) -> None:
    """Once a process: an explicit bf16 (or fp16, which means bf16 on the CPU) where torch can only emulate it."""
    logger.warning("mixed_precision=%r on a CPU without native bf16 (no AVX512-BF16 or AMX in /proc/cpuinfo): torch "
                   "emulates bf16 matmuls here, about 100x slower than fp32. mixed_precision='auto' computes in "
                   "fp32 on this CPU and in bf16 where it is native.", mode)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
