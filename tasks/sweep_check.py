"""A sweep's parameters checked whole before any trial runs: every problem named at once (ArgsError), with the
field it concerns, so a typo in `space` costs a second, not a night of trials."""

from __future__ import annotations

import difflib

from lmcore import ArgsError

from .sweep_space import Objective, parse_objective, parse_space, refused_combinations

SWEEP_OWNED = ("experiment", "register_model", "mlflow_run_id", "output_dir", "on_evaluation")
"""Pretrain parameters the sweep sets for each trial itself."""


def check_sweep(base: dict, space: dict, trials: int | None, method: str, objective, direction: str | None,
                max_parallel: int, prune, pretrain_parameters: set[str]) -> dict:
    """{"base": the trials' shared parameters (evaluations during training switched on where pruning needs
    them), "dims", "objective", "sampler": seed -> Optuna sampler}; ArgsError naming every problem otherwise.
    pretrain_parameters: what a trial (the pretrain flow) takes."""
    from .pruning import make_pruner

    problems = []
    if not isinstance(base, dict) or not base.get("corpus"):
        raise ArgsError("base: the pretrain parameters every trial shares, with at least corpus, e.g. "
                        "{\"corpus\": \"data/mine.txt\"}")
    known = set(pretrain_parameters) - set(SWEEP_OWNED)
    for key in base:
        if key in SWEEP_OWNED:
            problems.append(f"base.{key}: the sweep sets it for each trial (experiment is a parameter of the "
                            "sweep itself)")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"base.{key}: not a pretrain parameter" + (f" (did you mean {close[0]}?)" if close else ""))
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        problems.append(f"trials={trials!r}: a positive number of trials")
    if not isinstance(max_parallel, int) or max_parallel < 1:
        problems.append(f"max_parallel={max_parallel!r}: at least 1")
    try:
        make_pruner(prune)
    except ValueError as e:
        problems.append(str(e))
    model_types = ["bert"]
    try:
        model_types = _model_types(base, space)
    except ArgsError as e:
        problems.append(str(e))
    dims, goal = [], None
    try:
        dims = parse_space(space, model_types, method)
    except ArgsError as e:
        problems.append(str(e))
    try:
        goal = parse_objective(objective, direction, base.get("downstream"), tuple(model_types))
    except ArgsError as e:
        problems.append(str(e))
    if problems:
        raise ArgsError("invalid sweep:\n  " + "\n  ".join(problems))
    base = _with_evaluations(base, goal, prune)
    refused = refused_combinations(base, dims, method)
    if refused:
        raise ArgsError("invalid sweep: the engine refuses these trials of space (each would fail):\n  "
                        + "\n  ".join(refused))
    return {"base": base, "dims": dims, "objective": goal, "sampler": _sampler(method, max_parallel)}


def _model_types(base: dict, space: dict) -> list[str]:
    from lmcore.models.registry import MODEL_TYPES

    swept = space.get("model_type") if isinstance(space, dict) else None
    types = list(swept) if isinstance(swept, list) else [base.get("model_type", "bert")]
    unknown = [t for t in types if t not in MODEL_TYPES]
    if unknown:
        raise ArgsError(f"model_type: unknown {', '.join(map(repr, unknown))}; choose from "
                        f"{', '.join(sorted(MODEL_TYPES))}")
    return types


def _with_evaluations(base: dict, goal: Objective, prune) -> dict:
    """Pruning acts on evaluations during training: switched on (five per trial, unless the base says how often)
    when the objective is measured there."""
    from .common import logger
    from .presets import effective_args

    if prune is False or prune is None:
        return base
    if not goal.prunable:
        logger().info("prune: %s is known only when a trial ends, so no trial is stopped early (perplexity or "
                      "eval_loss can be)", goal.metric)
        return base
    args = dict(base.get("args") or {})
    args.setdefault("evaluate_during_training", True)
    # The evaluations are for the pruner: a checkpoint at each would cost more than the evaluation itself.
    args.setdefault("save_eval_checkpoints", False)
    if "evaluate_during_training_steps" not in args:
        effective = effective_args(base.get("preset", "demo"), args, base.get("model_type", "bert"),
                                   bool(base.get("model_name") or base.get("discriminator_name")))[0]
        steps = int(effective.get("max_steps") or 0)
        if steps > 0:
            args["evaluate_during_training_steps"] = max(1, steps // 5)
        else:  # a run measured in epochs: its length is known only to the engine
            logger().info("prune: trials train for epochs, not max_steps: they evaluate every %s steps "
                          "(args.evaluate_during_training_steps)", effective.get("evaluate_during_training_steps"))
    return {**base, "args": args}


def _sampler(method: str, max_parallel: int):
    """seed -> the sampler. TPE with trials running side by side assumes the running ones score badly (constant
    liar), so that it does not propose the same point to each."""
    import optuna

    if method == "grid":  # the grid's points are enqueued in order; the sampler never draws one
        return lambda seed: optuna.samplers.RandomSampler(seed=seed)
    return lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=max_parallel > 1)
