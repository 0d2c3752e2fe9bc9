"""`TrainingProgress`: what a training progress line reports (tokens/s, hardware FLOPs utilisation against the
measured matmul peak of the run's compute dtype, elapsed time and ETA), kept on the main process by `train.fit`."""

from __future__ import annotations

import contextlib
import logging
import time

from . import dist, hardware
from .precision import Precision

log = logging.getLogger(__name__)


class TrainingProgress:
    """What a progress line reports, on the main process: tokens/s and hardware FLOPs utilisation over exactly the
    steps since the previous line, and an ETA. The clock is paused while the loop evaluates, writes a checkpoint or
    counts FLOPs, so a window's rate is its training steps' rate (a checkpoint inside it no longer turns 28,000
    tokens/s into 300)."""

    def __init__(self, total: int, start_step: int, precision: Precision):
        self.total, self.start_step = total, start_step
        self.device_type, self.compute_dtype = precision.device_type, precision.name
        self.peak = hardware.matmul_peak_flops(self.device_type, self.compute_dtype) * dist.world()
        self.flops_per_position: float | None = None
        self.t0 = self.window_start = self.last_line = time.perf_counter()
        self.paused_total = self.paused_in_window = self.one_off_s = 0.0
        self.tokens = self.positions = self.steps = 0
        self.remeasured = False

    @contextlib.contextmanager
    def paused(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.paused_total += spent
            self.paused_in_window += spent

    @contextlib.contextmanager
    def one_off(self):
        """A training step that costs once what later ones will not (the first compiled step): its window's rate
        shows it as it was, the ETA leaves it out."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.one_off_s += time.perf_counter() - start

    def tick(self, tokens: int, positions: int) -> None:
        """One optimizer step done: `tokens` real tokens and `positions` computed positions (padding included),
        over all processes."""
        self.tokens += tokens
        self.positions += positions
        self.steps += 1

    def window_figures(self) -> dict:
        """tokens/s and HFU (FLOPs executed / (seconds x the measured matmul peak of the dtype in use, all
        processes)) since the previous call; the window then starts again. These are the figures the line shows
        and the tracker records at that step."""
        now = time.perf_counter()
        seconds = max(now - self.window_start - self.paused_in_window, 1e-9)
        flops = (self.flops_per_position or 0.0) * self.positions
        hfu = flops / seconds / self.peak if self.peak else 0.0
        if hfu > 1.0 and not self.remeasured:
            # Only a peak measured while something else held the cores can be beaten: measure it again, once.
            self.remeasured = True
            hardware.matmul_peak_flops.cache_clear()
            self.peak = max(self.peak, hardware.matmul_peak_flops(self.device_type, self.compute_dtype)
                            * dist.world())
            log.info("Utilisation came out over 100%%: the %s matmul peak was measured on busy cores; re-measured "
                     "at %.0f GFLOP/s", self.compute_dtype, self.peak / 1e9)
            hfu = flops / seconds / self.peak
        figures = {"tokens_per_second": self.tokens / seconds, "hfu": hfu}
        self.window_start, self.paused_in_window = now, 0.0
        self.tokens = self.positions = self.steps = 0
        return figures

    def quiet_too_long(self) -> bool:
        """A progress line at least every 30 s, whatever logging_steps says."""
        return time.perf_counter() - self.last_line > 30

    def line(self, state, total: int, loss: str, lr: float, figures: dict) -> str:
        self.last_line = time.perf_counter()
        elapsed = self.last_line - self.t0
        done = state.step - self.start_step
        eta = (elapsed - self.one_off_s) / max(done, 1) * (total - state.step)
        return (f"step {state.step}/{total} ({100 * state.step / total:.0f}%) | epoch {state.epoch} | "
                f"{loss} | lr {lr:.3g} | {figures['tokens_per_second']:,.0f} tokens/s | "
                f"HFU {100 * figures['hfu']:.0f}% of {self.compute_dtype} peak | elapsed {_hms(elapsed)} | "
                f"ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
