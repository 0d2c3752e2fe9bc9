"""`compile`: the training steps through `torch.compile` (inductor), decided once per run, undone after it.

What is compiled: the transformer bodies, i.e. every Hugging Face base model inside the training module (BertModel,
GPT2Model, both ELECTRA encoders), in place, so parameter names, `state_dict` and saved files are those of the
eager model and a checkpoint loads in plain transformers. Their shapes are fixed by the batch, which is where
inductor's fused kernels pay (LayerNorm, GELU, dropout and residual adds in one pass over memory); each body is one
graph, the CPU's dropout masks included (hardware.dropout_keep_mask draws out of place: an in-place draw broke the
graph at every dropout, and the cold warm-up was 1.2-1.4x longer for the fragments). The heads, the
chunked vocabulary loss and ELECTRA's sampling stay eager: their shapes follow how many positions were masked,
which would recompile every step. Evaluation, the FLOP count of the first step and generation run eager
(`eager()`): a compiled graph is built for the training step only, and is gone when `fit` returns.

`line_by_line` batches vary in length and size: the first batch compiles for its shapes, the first batch of another
shape compiles once more with those sizes symbolic (dynamo's automatic dynamic shapes), and no later batch
recompiles; `compiles()` counts them, and a test holds the bound. A step with fewer examples than the first compiled
one (the short last batch of an epoch) runs eager: with fixed-length blocks it is the only other shape a run meets,
and compiling it would cost a second warm-up in the middle of the run (on an H200, a BERT-base run of 60 steps over
an epoch of 35 batches spent 31 s of its 38 in that recompile, bench/RESULTS.md's GPU section).

Inductor keeps what it compiled on disk (`cache_folder()`): a second run of the same model and shapes starts in a
fraction of the first one's warm-up. Where compiling fails (a model type dynamo cannot trace, no C++ compiler,
an old torch), the first step says why in one line and the run continues eager.

The rule for `compile="auto"`, from bench/RESULTS.md (*Compiled path*, 2-core AVX512-BF16 CPUs, the bench's
models, two runs on 2026-12-03 and one on 2026-12-04): on the CPU a compiled step is 0.66-1.30x lmcore's eager one
(BERT-MLM bf16 1.18x, 0.90x, 0.85x; GPT-2 0.99x, 0.91x, 1.06x; ELECTRA 0.99x, 1.30x, 0.66x; fp32 0.88x in an earlier
run): the matmuls are most of the step, and the engine's eager path already does what inductor would fuse
(one-kernel GELU, masked-only vocabulary projection, chunked loss, cheap dropout masks). The cold warm-up (31-55 s on
2 cores) is earned back after 437-1,252 steps where it pays at all, and no 500-step run reaches 1.2x, so "auto"
stays eager on every CPU (`compile=True` chooses it for a long run). On CUDA, where kernel launches and elementwise
passes are a larger share, "auto" compiles runs that plan at least `AUTO_MIN_STEPS["cuda"]` steps. On an H200
(bench/RESULTS.md's GPU section, 2026-12-04) a BERT-base eager step at the bench's 32 x 128 tokens takes 25 ms and
the cold warm-up 27-35 s (5 s with inductor's cache warm): a 1.5x faster compiled step earns a cold warm-up back
after 3,200-4,200 steps, hence 4,000 (a longer step, from a larger batch or model, earns it back sooner). The
compiled step itself was not measured there after the short-batch fix above.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .precision import Precision

log = logging.getLogger(__name__)

SETTINGS = ("auto", True, False)
AUTO_MIN_STEPS = {"cuda": 4000}
"""Optimizer steps a run must plan before "auto" compiles, by device type; a device type not listed (the CPU) never
compiles under "auto" (see the module docstring)."""
BACKEND = "inductor"
OPTIONS = {"fallback_random": True}
"""Inductor settings for the bodies. fallback_random: dropout draws its masks with the eager kernels, from the same
generator: a compiled run takes the masks an eager run takes (and replays them on resume), and on the CPU inductor's
own random numbers cost more than they fuse away (bench: BERT bf16 step 0.72 s with them, 0.49 s without, eager
0.51 s)."""


@dataclass
class Decision:
    """Whether this run's training steps are compiled, and why (logged once, kept in the run's results)."""

    on: bool
    reason: str


def decide(setting, precision: Precision, planned_steps: int) -> Decision:
    """The run's decision from `compile` (True, False, "auto"), what it computes in and the steps it plans."""
    if setting is False:
        return Decision(False, "compile=False")
    if setting is True:
        return Decision(True, "compile=True")
    if not hasattr(torch, "compile"):
        return Decision(False, f"auto: torch {torch.__version__} has no torch.compile")
    kind = precision.device_type
    least = AUTO_MIN_STEPS.get(kind)
    if least is None:
        return Decision(False, f"auto: on {kind} compiling does not earn back its warm-up, or only in long MLM "
                               "runs and then by under 1.2x (bench/RESULTS.md); compile=True chooses it")
    if planned_steps < least:
        return Decision(False, f"auto: {planned_steps} steps planned, compiling pays from {least} on {kind} "
                               f"({precision.name})")
    return Decision(True, f"auto: {planned_steps} steps planned on {kind} ({precision.name}), at least {least}")


def bodies(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer bodies inside `module`: the Hugging Face base models (a model whose `base_model` is itself),
    each once."""
    from transformers import PreTrainedModel

    found, seen = [], set()
    for m in module.modules():
        if isinstance(m, PreTrainedModel) and m.base_model is m and id(m) not in seen:
            seen.add(id(m))
            found.append(m)
    return found


def cache_folder() -> Path:
    """Where inductor keeps compiled kernels: $TORCHINDUCTOR_CACHE_DIR when the user set it, else a stable folder
    under the user's cache (torch's own default is under /tmp, emptied on reboot; torch also writes its default
    into the variable the first time it asks, which is why the user's setting is the one seen at import)."""
    if _USER_CACHE_DIR and _USER_CACHE_DIR != _torch_default_cache_dir():
        return Path(_USER_CACHE_DIR)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lmcore" / "inductor"


_USER_CACHE_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def _torch_default_cache_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return os.path.abspath(default_cache_dir())


class Compiled:
    """The compiled state of one `fit`: `start()` compiles the bodies in place, `first_step()` runs the first
    compiled step (falling back to eager, with one log line, when compiling fails) and measures the warm-up,
    `stop()` puts the eager modules back."""

    def __init__(self, module: torch.nn.Module, decision: Decision):
        self.module, self.decision = module, decision
        self.on = decision.on
        self.compiled: list[torch.nn.Module] = []
        self.warmup_s: float | None = None
        self.failed: str | None = None
        self._pending = "first" if decision.on else None
        self._first_s = 0.0
        self.rows: int | None = None
        """Examples in the first compiled step: a step with fewer runs eager (`step`)."""

    @property
    def warming(self) -> bool:
        """The next step is the first compiled one (it compiles)."""
        return self._pending == "first"

    def start(self) -> None:
        if not self.on:
            return
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_folder())
        for body in bodies(self.module):
            body.compile(backend=BACKEND, options=OPTIONS if BACKEND == "inductor" else None)
            self.compiled.append(body)
        if not self.compiled:
            self._give_up("no Hugging Face base model inside the training module")

    def stop(self) -> None:
        for body in self.compiled:
            body._compiled_call_impl = None
        self.compiled = []

    def _give_up(self, why: str) -> None:
        self.stop()
        self.on, self.failed, self._pending = False, why, None
        log.warning("compile: %s; training continues eager", why)

    def step(self, run_step, rows: int | None = None):
        """`run_step()`: one training step of `rows` examples. The first compiled one falls back to eager when
        compiling fails (nothing was stepped: the optimizer runs after the backward pass), and with the next full
        one gives the warm-up: the first step's time less that one's. A step with fewer examples than the first
        runs eager (the short last batch of an epoch would otherwise compile again)."""
        if self._pending == "first":
            self.rows = rows
            self._pending = "second"
            start = time.perf_counter()
            try:
                out = run_step()
            except Exception as e:
                if not _is_compile_failure(e):
                    raise
                for p in self.module.parameters():
                    p.grad = None
                self._give_up(f"compiling failed ({_root_cause(e)})")
                torch._dynamo.reset()
                return run_step()
            self._first_s = time.perf_counter() - start
            return out
        if self.on and rows is not None and self.rows is not None and rows < self.rows:
            with eager():
                return run_step()
        if self._pending == "second":
            self._pending = None
            start = time.perf_counter()
            out = run_step()
            self.warmup_s = max(0.0, self._first_s - (time.perf_counter() - start))
            log.info("compile: warm-up %.1f s (first compiled step less the second); kernels cached in %s",
                     self.warmup_s, os.environ.get("TORCHINDUCTOR_CACHE_DIR", cache_folder()))
            return out
        return run_step()


def _is_compile_failure(e: BaseException) -> bool:
    """A failure of dynamo or inductor (tracing, lowering, the C++ compiler), not of the model's own code."""
    while e is not None:
        if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _root_cause(e: BaseException) -> str:
    """"Type: first line" of the innermost cause: what dynamo's wrappers ("backend='inductor' raised:") wrap."""
    while getattr(e, "inner_exception", None) is not None or e.__cause__ is not None:
        e = getattr(e, "inner_exception", None) or e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def eager():
    """Compiled modules run their eager code inside this context (evaluation, FLOP counting, generation)."""
    if hasattr(torch, "compiler") and hasattr(torch.compiler, "set_stance"):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def compiles() -> int:
    """Graphs dynamo compiled in this process so far (recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))
