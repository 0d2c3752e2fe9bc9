"""Optimizers, parameter groups and learning-rate schedules.

Every schedule is a pure function of the step (the multiplier of each group's initial learning rate, with the
same definitions as transformers' `get_scheduler`), so a resumed run needs no scheduler state. Parameter groups
follow the Simple Transformers settings: `custom_parameter_groups` by name, `custom_layer_parameters` by layer
number, everything else in one group with weight decay and one without (biases and LayerNorm weights).
"""

from __future__ import annotations

import difflib
import logging
import math

import torch

from ..models.args import ArgsError, LanguageModelingArgs

log = logging.getLogger(__name__)


def warmup_steps(args: LanguageModelingArgs, total: int) -> int:
    return args.warmup_steps if args.warmup_steps > 0 else math.ceil(total * args.warmup_ratio)


def lr_multiplier(args: LanguageModelingArgs, step: int, total: int, warmup: int) -> float:
    """The factor applied to each group's initial learning rate for optimizer step `step` (0-based)."""
    name = args.scheduler
    if name == "constant_schedule":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant_schedule_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if name == "linear_schedule_with_warmup":
        return max(0.0, (total - step) / max(1, total - warmup))
    if name == "cosine_schedule_with_warmup":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * args.cosine_schedule_num_cycles * 2.0 * progress)))
    if name == "cosine_with_hard_restarts_schedule_with_warmup":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((args.cosine_schedule_num_cycles * progress) % 1.0))))
    if name == "polynomial_decay_schedule_with_warmup":
        start, end = args.learning_rate, args.polynomial_decay_schedule_lr_end
        if step > total:
            return end / start
        remaining = 1.0 - (step - warmup) / max(1, total - warmup)
        return ((start - end) * remaining ** args.polynomial_decay_schedule_power + end) / start
    raise ArgsError(f"scheduler={name!r}: unknown schedule")


def set_learning_rates(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Scale every group's initial learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # Biases and normalisation weights (every parameter of fewer than 2 dimensions) get no weight decay.
    return param.dim() < 2 or "LayerNorm.weight" in name or name.endswith(".bias")


def parameter_groups(model: torch.nn.Module, args: LanguageModelingArgs) -> list[dict]:
    """Optimizer groups: the custom ones first (by name, then by layer), then the rest with and without weight
    decay. With `train_custom_parameters_only` the rest is frozen instead. Unknown names are an error. Names are
    those of the model the user holds (`LanguageModelingModel.get_named_parameters()`): a training wrapper that
    holds it as `.model` is looked through."""
    inner = getattr(model, "model", None)
    named = dict((inner if isinstance(inner, torch.nn.Module) else model).named_parameters())
    taken: set[str] = set()
    groups: list[dict] = []
    for spec in args.custom_parameter_groups or []:
        names = list(spec["params"])
        unknown = [n for n in names if n not in named]
        if unknown:
            hints = [f"{n!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(n, named, 1))
                                 else "") for n in unknown]
            raise ArgsError("custom_parameter_groups names parameters the model does not have: " + ", ".join(hints)
                            + " (model.get_named_parameters() lists them)")
        groups.append({**{k: v for k, v in spec.items() if k != "params"}, "params": [named[n] for n in names]})
        taken.update(names)
    for spec in args.custom_layer_parameters or []:
        marker = f"layer.{spec['layer']}."
        options = {k: v for k, v in spec.items() if k != "layer"}
        chosen = [n for n in named if marker in n and n not in taken]
        if not chosen:
            raise ArgsError(f"custom_layer_parameters: no parameter name contains {marker!r}")
        decay = [named[n] for n in chosen if not _no_decay(n, named[n])]
        flat = [named[n] for n in chosen if _no_decay(n, named[n])]
        groups += [{**options, "params": decay}, {**options, "weight_decay": 0.0, "params": flat}]
        taken.update(chosen)
    rest = [n for n in named if n not in taken]
    if args.train_custom_parameters_only:
        for n in rest:
            named[n].requires_grad_(False)
        log.info("train_custom_parameters_only: %d parameter tensors frozen, %d trained", len(rest), len(taken))
    else:
        groups += [{"params": [named[n] for n in rest if not _no_decay(n, named[n])],
                    "weight_decay": args.weight_decay},
                   {"params": [named[n] for n in rest if _no_decay(n, named[n])], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, args: LanguageModelingArgs) -> torch.optim.Optimizer:
    """AdamW (torch's fused kernel where it exists: a few % faster per step, on the CPU too) or transformers'
    Adafactor. Each group remembers its initial learning rate for the schedule."""
    groups = parameter_groups(model, args)
    if args.optimizer == "Adafactor":
        from transformers.optimization import Adafactor

        # With relative steps Adafactor sets its own step size and refuses a learning rate.
        lr = None if args.adafactor_relative_step else args.learning_rate
        optimizer = Adafactor(groups, lr=lr, eps=tuple(args.adafactor_eps), clip_threshold=args.adafactor_clip_threshold,
                              decay_rate=args.adafactor_decay_rate, beta1=args.adafactor_beta1,
                              weight_decay=args.weight_decay, scale_parameter=args.adafactor_scale_parameter,
                              relative_step=args.adafactor_relative_step, warmup_init=args.adafactor_warmup_init)
    else:
        kw = dict(lr=args.learning_rate, eps=args.adam_epsilon, betas=tuple(args.adam_betas),
                  weight_decay=args.weight_decay)
        try:
            optimizer = torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError):
            optimizer = torch.optim.AdamW(groups, **kw)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"] if group["lr"] is not None else args.learning_rate
    return optimizer


def clips_gradients(args: LanguageModelingArgs) -> bool:
    """Adafactor clips its own updates (adafactor_clip_threshold); global norm clipping is for AdamW."""
    return args.optimizer == "AdamW"
