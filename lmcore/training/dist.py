"""Process-group helpers. One process: every call is a no-op. Under torchrun: gloo on CPU, nccl on GPU."""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist

from ..base.host import threads_per_process


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(use_cuda: bool) -> None:
    """Join the torchrun process group once (the engine does this itself; user scripts need not)."""
    if launched_by_torchrun() and not dist.is_initialized():
        gpu = use_cuda and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(local_rank())
        else:
            # torchrun gives every rank one thread; share this machine's cores out instead.
            torch.set_num_threads(threads_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        dist.init_process_group(backend="nccl" if gpu else "gloo", timeout=datetime.timedelta(minutes=30))
        # Left to interpreter teardown, the group's C++ threads can outlive it and abort the process
        # ("terminate called without an active exception", SIGABRT) after all work is done.
        atexit.register(shutdown)


def set_threads(thread_count: int | None) -> None:
    """An explicit thread count (args.thread_count) wins over the policy above."""
    if thread_count:
        torch.set_num_threads(thread_count)


def shutdown() -> None:
    """Leave the process group (idempotent); called at exit by `init`, callable earlier by a script."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes files, logs and shows progress."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def sum_(values: list[float], device) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if active():
        dist.all_reduce(t)
    return t.tolist()


def any_(flag: bool, device) -> bool:
    """True on every rank if `flag` is true on any rank."""
    return sum_([1.0 if flag else 0.0], device)[0] > 0
