"""Stopping a sweep's trial that is clearly behind, from inside its training.

The engine runs a trial in its own process (under torchrun for several); the pretrain stage names
`tasks.pruning:reporter` as the run spec's `on_evaluation` hook, so the engine's main process hands each evaluation
to `reporter`'s hook, which records it on the trial in the sweep's Optuna study and asks the sweep's pruner whether
to go on. A trial told to stop saves its model and ends normally; the sweep records it as pruned, not failed.

The rule (`ClearlyBehind`): a trial more than a margin behind the best quarter of the finished trials at the same
step is behind. The field's default, the median rule, fails small sweeps: their first trials are random, a few of
them bad, and the median sits with those. The margin is there because at the sizes swept on a CPU two equally good
settings differ by a few percent from evaluation to evaluation, and stopping one of them for that is noise, not a
verdict; and a trial is judged from its second evaluation on (warm-up makes the first one slow).
"""

from __future__ import annotations

import bisect

import optuna
from optuna.trial import TrialState

DEFAULT_MARGIN = 0.1
"""Behind by more than 10%."""
DEFAULT_PERCENTILE = 25
"""Behind the best quarter of the finished trials, not their median: a few bad settings among the first trials (a
random start over a wide learning-rate range has them) drag the median to their level, and then nothing is behind
it. Measured: an 8-trial TPE sweep over a log range of learning rates pruned nothing with the median rule."""


class ClearlyBehind(optuna.pruners.BasePruner):
    """Prune a trial whose latest reported value is worse by more than `margin` (a fraction of it) than the
    `percentile`-th best of the finished trials' values at the same step (their latest value at or before it), once
    `n_startup_trials` trials have finished, the trial has reported `min_evaluations` times and from step
    `n_warmup_steps` on. percentile 50 is the median rule."""

    def __init__(self, margin: float = DEFAULT_MARGIN, percentile: float = DEFAULT_PERCENTILE,
                 n_startup_trials: int = 2, n_warmup_steps: int = 0, min_evaluations: int = 2):
        if margin < 0 or not 0 <= percentile <= 100 or n_startup_trials < 1 or n_warmup_steps < 0 or \
                min_evaluations < 1:
            raise ValueError("prune: margin >= 0, percentile 0..100, n_startup_trials >= 1, n_warmup_steps >= 0, "
                             "min_evaluations >= 1")
        self.margin, self.percentile = margin, percentile
        self.n_startup_trials, self.n_warmup_steps, self.min_evaluations = n_startup_trials, n_warmup_steps, \
            min_evaluations

    def prune(self, study, trial) -> bool:
        return self.verdict(study, trial) is not None

    def verdict(self, study, trial) -> str | None:
        """Why `trial` should stop now, or None."""
        step = trial.last_step
        if step is None or step < self.n_warmup_steps or len(trial.intermediate_values) < self.min_evaluations:
            return None
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        others = [v for v in (_value_at(t.intermediate_values, step) for t in finished) if v is not None]
        if len(others) < self.n_startup_trials:
            return None
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        # The percentile counted from the best end: the 25th is better than three quarters of the finished trials.
        reference = _percentile(others, self.percentile if minimize else 100 - self.percentile)
        value = trial.intermediate_values[step]
        gap = self.margin * abs(reference)
        if not (value > reference + gap if minimize else value < reference - gap):
            return None
        which = "median" if self.percentile == 50 else f"{self.percentile:g}th-best percentile"
        return (f"pruned at step {step}: {value:.4g} is more than {self.margin:.0%} behind {reference:.4g}, the "
                f"{which} of {len(others)} finished trials")


def _percentile(values: list, q: float) -> float:
    """The q-th percentile of `values` (linear between the closest ranks, as numpy's default)."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _value_at(values: dict, step: int) -> float | None:
    steps = sorted(values)
    i = bisect.bisect_right(steps, step)
    return values[steps[i - 1]] if i else None


def make_pruner(prune) -> ClearlyBehind | None:
    """The sweep's `prune` parameter: false (none), true (the defaults), or the rule's settings as a dict
    ({"margin": 0.5, "percentile": 25, "n_startup_trials": 2, "n_warmup_steps": 0, "min_evaluations": 2})."""
    if prune is False or prune is None:
        return None
    if prune is True:
        return ClearlyBehind()
    if isinstance(prune, dict):
        known = {"margin", "percentile", "n_startup_trials", "n_warmup_steps", "min_evaluations"}
        unknown = set(prune) - known
        if unknown:
            raise ValueError(f"prune: unknown setting(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
        return ClearlyBehind(**prune)
    raise ValueError(f"prune: true, false or the rule's settings as a dict, not {prune!r}")


def reporter(study: str, trial: int, metric: str, prune: bool | dict = True):
    """The engine's `on_evaluation` hook for one trial (see the module docstring): reports `metric` of each
    evaluation at its step, and answers with the reason to stop when the pruner says the trial is behind. The
    store is found from the environment the engine inherits, as the sweep found it (no password in a spec)."""
    from .sweep_store import load_study, storage_url

    loaded = load_study(storage_url(), study)
    number = trial
    trial = optuna.trial.Trial(loaded, loaded.trials[number]._trial_id)  # Optuna names a trial's record by its id
    pruner = make_pruner(prune)

    def hook(step: int, result: dict) -> str | None:
        if metric not in result:
            return None
        trial.report(float(result[metric]), step)
        if pruner is None:
            return None
        return pruner.verdict(loaded, loaded.get_trials(deepcopy=False)[number])

    return hook
