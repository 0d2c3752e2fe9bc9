"""What a sweep searches and what it optimises, checked before any trial runs.

`space` maps a field to its values: a list (`{"learning_rate": [1e-3, 5e-4]}`), or a range of numbers
(`{"learning_rate": {"low": 1e-4, "high": 3e-3, "log": true}}`, `{"config.num_hidden_layers": {"low": 2, "high":
6, "step": 2}}`). A field is a LanguageModelingArgs field, a model config field (`config.hidden_size`; for ELECTRA
also `generator_config.*` and `discriminator_config.*`), or `model_type`. A `grid` sweep needs lists or ranges with a
`step`; `tpe` takes either.

Everything a trial would refuse is refused here, naming the field (with the nearest valid name for a misspelt one):
an unknown field, an empty list or a value listed twice (a trial's key is its values), an empty range, a log range
that reaches zero, and any combination the engine refuses (`hidden_size` 72 with 5 heads), found by checking the
grid's points, or every corner of the ranges with every listed value, on the meta device (well under a second
each; the first 256 of them).
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass

from lmcore import ArgsError, LanguageModelingArgs
from lmcore.models.registry import MODEL_TYPES

from .inputs import PIPELINE_OWNED

METHODS = ("grid", "tpe")
CONFIG_GROUPS = ("config", "generator_config", "discriminator_config")
_RANGE_KEYS = {"low", "high", "log", "step"}
_CHECKED_COMBINATIONS = 256
"""At most this many combinations are tried on the meta device before the sweep starts."""

MINIMIZED = ("perplexity", "loss")
MAXIMIZED = ("accuracy", "f1", "precision", "recall", "auc", "auroc", "auprc", "mcc", "gain")
ENGINE_METRICS = ("perplexity", "eval_loss", "generator_perplexity", "generator_loss", "discriminator_loss",
                  "discriminator_accuracy", "discriminator_f1", "discriminator_precision", "discriminator_recall",
                  "discriminator_auc")
"""What the evaluate stage logs on a trial's run (tasks/evaluate.py); downstream.<task>.<metric> come on top."""
DURING_TRAINING = ("perplexity", "eval_loss")
"""Objectives the engine also measures while it trains: the only ones a trial can be pruned on."""


@dataclass(frozen=True)
class Dimension:
    """One swept field: listed `values`, or a range low..high (integers when both ends are)."""

    name: str
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        return self.values is None and isinstance(self.low, int) and isinstance(self.high, int) and \
            (self.step is None or isinstance(self.step, int))

    def distribution(self):
        """The Optuna distribution the sampler draws this field from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.values is not None:
            return CategoricalDistribution(list(self.values))
        if self.integer:
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid(self) -> list:
        """Every value a grid sweep visits, in order."""
        if self.values is not None:
            return list(self.values)
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        points = [self.low + i * self.step for i in range(n)]
        return [int(p) for p in points] if self.integer else [round(p, 12) for p in points]

    def corners(self) -> list:
        return list(self.values) if self.values is not None else [self.low, self.high]


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str
    """minimize or maximize"""

    @property
    def prunable(self) -> bool:
        return self.metric in DURING_TRAINING


def parse_objective(objective: str | dict, direction: str | None, downstream=None,
                    model_types: tuple = ("bert",)) -> Objective:
    """`objective` names a metric the trials log ("perplexity", "downstream.<task>.accuracy", ...), or is
    {"metric", "direction"}; the direction follows from the name when it says (perplexity, loss: minimize;
    accuracy, f1, gain, ...: maximize)."""
    if isinstance(objective, dict):
        unknown = set(objective) - {"metric", "direction"}
        if unknown or "metric" not in objective:
            raise ArgsError(f"objective: a metric name, or {{\"metric\": ..., \"direction\": ...}}; got {objective}")
        direction = objective.get("direction", direction)
        objective = objective["metric"]
    metric = str(objective)
    if metric.startswith("downstream."):
        if not downstream:
            raise ArgsError(f"objective {metric!r}: the trials fine-tune on no labelled task; add "
                            "base.downstream (e.g. \"rotten_tomatoes\") or choose perplexity")
        if metric.count(".") < 2:
            raise ArgsError(f"objective {metric!r}: name it downstream.<task>.<metric>, e.g. "
                            "downstream.rotten_tomatoes.accuracy")
        _check_downstream_task(metric, downstream)
    elif metric not in ENGINE_METRICS:
        raise ArgsError(f"objective {metric!r}: not a metric the trials log{_nearest(metric, ENGINE_METRICS)}; "
                        f"choose one of {', '.join(ENGINE_METRICS)} or downstream.<task>.<metric>")
    if metric.startswith(("generator_", "discriminator_")) and "electra" not in model_types:
        raise ArgsError(f"objective {metric!r}: only ELECTRA trials log it (model_type is "
                        f"{'/'.join(model_types)}); choose perplexity or eval_loss")
    last = metric.rsplit(".", 1)[-1]
    inferred = ("minimize" if any(w in last for w in MINIMIZED) else
                "maximize" if any(w in last for w in MAXIMIZED) else None)
    direction = direction or inferred
    if direction not in ("minimize", "maximize"):
        raise ArgsError(f"objective {metric!r}: say whether to minimize or maximize it (direction)")
    return Objective(metric, direction)


DOWNSTREAM_FIGURES = ("accuracy", "f1", "mcc", "gain")
"""What the downstream stage logs per task that a sweep can optimise (tasks/downstream.py)."""


def _check_downstream_task(metric: str, downstream) -> None:
    """downstream.<task>.<figure>: a task the trials fine-tune on (its name as the downstream stage gives it)."""
    from .inputs import check_downstream

    task, _, figure = metric[len("downstream."):].rpartition(".")
    if figure not in DOWNSTREAM_FIGURES:
        raise ArgsError(f"objective {metric!r}: the figure is one of {', '.join(DOWNSTREAM_FIGURES)}")
    try:  # the task names come from reading base.downstream, as the downstream stage will
        check_downstream(downstream, promote_on=f"downstream.{task}.accuracy")
    except ArgsError as e:
        raise ArgsError(f"objective {metric!r}: {e}") from None


def parse_space(space: dict, model_types: list[str], method: str) -> list[Dimension]:
    """The swept fields, every problem named at once (ArgsError)."""
    if method not in METHODS:
        raise ArgsError(f"method {method!r}: choose grid or tpe")
    if not isinstance(space, dict) or not space:
        raise ArgsError("space: give at least one field to sweep, e.g. {\"learning_rate\": [1e-3, 5e-4]}")
    problems, dims = [], []
    for name, given in space.items():
        problem = _field_problem(name, model_types)
        if problem:
            problems.append(problem)
            continue
        try:
            dims.append(_dimension(name, given, method))
        except ArgsError as e:
            problems.append(str(e))
    if problems:
        raise ArgsError("space:\n  " + "\n  ".join(problems))
    return dims


def _field_problem(name: str, model_types: list[str]) -> str | None:
    fields = set(LanguageModelingArgs.__dataclass_fields__) - set(PIPELINE_OWNED) - set(CONFIG_GROUPS)
    if name == "model_type":
        return None
    group, _, key = name.partition(".")
    if key:
        if group not in CONFIG_GROUPS:
            return f"{name}: nested fields are config.<field> (or generator_config / discriminator_config)"
        if group != "config" and "electra" not in model_types:
            return f"{name}: only ELECTRA has a {group}; use config.{key}"
        known = set().union(*(MODEL_TYPES[t].config_cls().to_dict() for t in model_types))
        return None if key in known else (f"{name}: not a field of the {'/'.join(model_types)} config"
                                          f"{_nearest(key, known, group + '.')}")
    if name in PIPELINE_OWNED:
        return f"{name}: the pipeline chooses it for every trial (a folder of its own)"
    return None if name in fields else f"{name}: not a setting{_nearest(name, fields)}"


def _nearest(name: str, known, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _dimension(name: str, given, method: str) -> Dimension:
    if isinstance(given, (list, tuple)):
        if not given:
            raise ArgsError(f"{name}: the list of values is empty")
        keys = [repr(v) for v in given]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ArgsError(f"{name}: {', '.join(twice)} listed twice (a trial is its values: it would run twice)")
        return Dimension(name, values=tuple(given))
    if not isinstance(given, dict):
        raise ArgsError(f"{name}: a list of values or a range {{\"low\", \"high\", \"log\", \"step\"}}, not {given!r}")
    unknown = set(given) - _RANGE_KEYS
    if unknown or not {"low", "high"} <= set(given):
        raise ArgsError(f"{name}: a range has low and high (and optionally log or step); got {sorted(given)}")
    low, high, log, step = given["low"], given["high"], bool(given.get("log", False)), given.get("step")
    numbers = (low, high) + ((step,) if step is not None else ())
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise ArgsError(f"{name}: low, high and step must be numbers")
    if not low < high:
        raise ArgsError(f"{name}: the range {low}..{high} is empty (low must be below high)")
    if log and low <= 0:
        raise ArgsError(f"{name}: a log range must stay above 0 (low is {low})")
    if log and step is not None:
        raise ArgsError(f"{name}: a range is either log or stepped, not both")
    if step is not None and step <= 0:
        raise ArgsError(f"{name}: step must be above 0")
    if method == "grid" and step is None:
        raise ArgsError(f"{name}: a grid needs the values listed, or a range with a step")
    return Dimension(name, low=low, high=high, log=log, step=step)


def combinations(dims: list[Dimension], method: str, limit: int | None = None) -> list[dict]:
    """The grid's points in order (grid), or every corner of the ranges with every listed value (tpe); the first
    `limit` of them."""
    axes = [d.grid() if method == "grid" else d.corners() for d in dims]
    names = [d.name for d in dims]
    return [dict(zip(names, values)) for values in itertools.islice(itertools.product(*axes), limit)]


def apply(base: dict, assignment: dict) -> dict:
    """The pretrain parameters of one trial: `base` with the assignment's values put into model_type and args."""
    params = {**base, "args": {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base.get("args") or {}).items()}}
    for name, value in assignment.items():
        if name == "model_type":
            params["model_type"] = value
            continue
        group, _, key = name.partition(".")
        if key:
            params["args"].setdefault(group, {})[key] = value
        else:
            params["args"][name] = value
    return params


def refused_combinations(base: dict, dims: list[Dimension], method: str) -> list[str]:
    """What the pipeline's own checks say of each combination a trial could meet (the first few refusals)."""
    from .inputs import check_parameters
    from .presets import effective_args

    refused = []
    starts_from = tuple(k for k in ("model_name", "generator_name", "discriminator_name") if base.get(k))
    for assignment in combinations(dims, method, _CHECKED_COMBINATIONS):
        params = apply(base, assignment)
        model_type = params.get("model_type", "bert")
        try:
            args = effective_args(params.get("preset", "demo"), params["args"], model_type, bool(starts_from))[0]
            check_parameters(None, args, params.get("nproc_per_node", 1), model_type=model_type,
                             starts_from=starts_from, model_name=params.get("model_name"))
        except (ArgsError, ValueError) as e:
            said = ", ".join(f"{k}={v}" for k, v in assignment.items())
            refused.append(f"{said}: {str(e).replace(chr(10), ' ')}")
        if len(refused) == 3:
            break
    return refused
