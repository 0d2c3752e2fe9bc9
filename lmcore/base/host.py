"""What this process has to work with, for the data and the training layers alike: the cores it may run on and
where a batch's tensors go. A leaf: imports torch and the standard library only, so `data` need not reach into
the training layer (`dist`) for a core count, nor `train` / `evaluate` into `objectives` for a device move."""

from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_process(local_processes: int) -> int:
    """The one thread-count policy: the usable cores shared out between the processes of one machine (more
    threads than cores per process makes every process slower)."""
    return max(1, usable_cores() // max(1, local_processes))


def to_device(prepared: dict, device, non_blocking: bool = True) -> dict:
    """A prepared batch's tensors on `device` (counts and seeds stay host numbers)."""
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in prepared.items()}
