"""Stopping a sweep's trial that is clearly behind, from inside its training.

The engine runs a trial in its own process (under torchrun for several); the pretrain stage names
`tasks.pruning:reporter` as the run spec's `on_evaluation` hook, so the engine's main process hands each evaluation
to `reporter`'s hook, which records it on the trial in the sweep's Optuna study and asks the sweep's pruner whether
to go on. A trial told to stop saves its model and ends normally; the sweep records it as pruned, not failed.

The rule (`ClearlyBehind`): the median rule (the field's default: a trial worse than the median of the finished
trials at the same step is behind) with a margin, because at the sizes swept on a CPU two equally good settings
differ by a few percent from evaluation to evaluation, and stopping one of them for that is noise, not a verdict.
"""

from __future__ import annotations

import bisect
import statistics

import optuna
from optuna.trial import TrialState

DEFAULT_MARGIN = 0.1
"""Behind the median by more than 10% of it."""


class ClearlyBehind(optuna.pruners.BasePruner):
    """Prune a trial whose latest reported value is worse than the median of the finished trials' values at the
    same step (their latest value at or before it) by more than `margin` (a fraction of the median), once
    `n_startup_trials` trials have finished and from step `n_warmup_steps` on."""

    def __init__(self, margin: float = DEFAULT_MARGIN, n_startup_trials: int = 2, n_warmup_steps: int = 0):
        if margin < 0 or n_startup_trials < 1 or n_warmup_steps < 0:
            raise ValueError("prune: margin >= 0, n_startup_trials >= 1, n_warmup_steps >= 0")
        self.margin, self.n_startup_trials, self.n_warmup_steps = margin, n_startup_trials, n_warmup_steps

    def prune(self, study, trial) -> bool:
        return self.verdict(study, trial) is not None

    def verdict(self, study, trial) -> str | None:
        """Why `trial` should stop now, or None."""
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return None
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(finished) < self.n_startup_trials:
            return None
        others = [v for v in (_value_at(t.intermediate_values, step) for t in finished) if v is not None]
        if len(others) < self.n_startup_trials:
            return None
        median, value = statistics.median(others), trial.intermediate_values[step]
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        behind = value > median + self.margin * abs(median) if minimize else value < median - self.margin * abs(median)
        if not behind:
            return None
        return (f"pruned at step {step}: {value:.4g} is more than {self.margin:.0%} behind the median {median:.4g} "
                f"of {len(others)} finished trials")


def _value_at(values: dict, step: int) -> float | None:
    steps = sorted(values)
    i = bisect.bisect_right(steps, step)
    return values[steps[i - 1]] if i else None


def make_pruner(prune) -> ClearlyBehind | None:
    """The sweep's `prune` parameter: false (none), true (the defaults), or the rule's settings as a dict
    ({"margin": 0.5, "n_startup_trials": 2, "n_warmup_steps": 0})."""
    if prune is False or prune is None:
        return None
    if prune is True:
        return ClearlyBehind()
    if isinstance(prune, dict):
        unknown = set(prune) - {"margin", "n_startup_trials", "n_warmup_steps"}
        if unknown:
            raise ValueError(f"prune: unknown setting(s) {sorted(unknown)}; known: margin, n_startup_trials, "
                             "n_warmup_steps")
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
