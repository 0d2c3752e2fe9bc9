"""`fit()`: the training loop, readable top to bottom.

lr from the step -> micro-batches (masks seeded by their position) -> loss checked finite on every rank -> clip ->
step -> log -> evaluate -> checkpoint -> stop. Everything the loop needs to continue lives in `state`, which is
exactly what a checkpoint saves and what resume loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import atomic, checkpoint, dist, hardware, optim
from .args import ArgsError, LanguageModelingArgs
from .data import Features, collate, epoch_batches
from .evaluate import batch_generator

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; nothing was stepped with it."""


@dataclass
class TrainSetup:
    """What `fit` trains and with what; built by `LanguageModelingModel.train_model`."""

    model: torch.nn.Module
    objective: object
    features: Features
    args: LanguageModelingArgs
    device: torch.device
    pad_id: int
    output_dir: Path
    save_model: Callable[[Path], None]
    """Writes the model, tokenizer and args into a folder (rank 0 only)."""
    evaluate: Callable[[], dict] | None = None
    tracker: object = None
    autocast: Callable = contextlib.nullcontext
    resume: dict | None = None
    """A loaded checkpoint state to continue from."""
    group_by_length: bool = False
    grad_scaler: bool = False
    """Scale the loss (CUDA fp16 autocast): fp16 gradients underflow otherwise."""
    compute_dtype: str = "float32"
    """The dtype matmuls run in (autocast's), for model FLOPs utilisation against that dtype's measured peak."""


@dataclass
class State:
    step: int = 0
    epoch: int = 0
    position: int = 0
    """Micro-batches of the current epoch already consumed."""
    tokens_seen: int = 0
    train_loss: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    eval_history: list = field(default_factory=list)
    best_metric: float | None = None
    """Best value of `early_stopping_metric` so far (the best model's)."""
    evals_without_improvement: int = 0
    stopped_early: bool = False


def plan(features: Features, args: LanguageModelingArgs) -> tuple[int, int]:
    """(micro-batches per epoch for this rank, total optimizer steps)."""
    micro = len(epoch_batches(features, args.train_batch_size, args.seed, 0, dist.rank(), dist.world()))
    steps_per_epoch = math.ceil(micro / args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps and args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    return micro, total


def fit(run: TrainSetup) -> State:
    args, model, device = run.args, run.model, run.device
    tracker = run.tracker
    main = dist.is_main()
    micro_per_epoch, total = plan(run.features, args)
    warmup = optim.warmup_steps(args, total)
    optimizer = optim.make_optimizer(model, args)
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    clip = args.max_grad_norm if optim.clips_gradients(args) else math.inf
    scaler = torch.amp.GradScaler(device.type) if run.grad_scaler else None
    state = State()
    if run.resume is not None:
        state = _restore(run.resume, optimizer)
        log.info("Resuming at step %d (epoch %d, micro-batch %d)", state.step, state.epoch, state.position)
    ddp_model = model
    if dist.world() > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    progress = _Progress(total, state.step)
    if main:
        progress.flops_per_token = hardware.flops_per_token(model, run.features.meta["block_size"],
                                                            getattr(run.objective, "scored_fraction", 1.0))
        progress.peak = hardware.matmul_peak_flops(device.type, run.compute_dtype) * dist.world()
    batches = None
    while state.step < total and not state.stopped_early:
        if batches is None:
            batches = epoch_batches(run.features, args.train_batch_size, args.seed, state.epoch, dist.rank(),
                                    dist.world(), run.group_by_length)
        multiplier = optim.lr_multiplier(args, state.step, total, warmup)
        optim.set_learning_rates(optimizer, multiplier)
        lr = args.learning_rate * multiplier  # what is logged: custom groups scale their own rates alike
        group_batches = batches[state.position:state.position + args.gradient_accumulation_steps]
        step_loss, step_tokens, extra = 0.0, 0, {}
        for k, indices in enumerate(group_batches):
            batch = {n: t.to(device, non_blocking=True) for n, t in collate(run.features, indices, run.pad_id).items()}
            gen = batch_generator(args.seed, state.epoch, state.position + k, dist.rank())
            sync = k == len(group_batches) - 1 or dist.world() == 1
            with (contextlib.nullcontext() if sync else ddp_model.no_sync()), run.autocast():
                loss, parts = run.objective.train_loss(ddp_model, batch, gen)
            scaled = loss / len(group_batches)
            (scaler.scale(scaled) if scaler else scaled).backward()
            step_loss += loss.item() / len(group_batches)
            step_tokens += int(batch["attention_mask"].sum())
            for name, v in parts.items():
                extra[name] = extra.get(name, 0.0) + float(v) / len(group_batches)
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, clip)
        # With loss scaling an infinite gradient only means "lower the scale" (the scaler skips that step).
        bad_grad = not math.isfinite(float(grad_norm)) and scaler is None
        if dist.any_(not math.isfinite(step_loss) or bad_grad, device):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"step {state.step + 1}: the training loss is {step_loss} (gradient norm {float(grad_norm)}) on at "
                f"least one process; stopped before the optimizer step, so the last checkpoint is intact. Try a "
                f"lower learning_rate (now {args.learning_rate}), mixed_precision='no', or check the corpus.")
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.position += len(group_batches)
        state.tokens_seen += step_tokens * dist.world()
        state.train_loss.append(step_loss)
        state.learning_rate.append(lr)
        epoch_done = state.position >= micro_per_epoch
        if epoch_done:
            state.epoch, state.position, batches = state.epoch + 1, 0, None

        rate = progress.tick(state.step, step_tokens * dist.world())
        if main and tracker is not None:
            tracker.log_metrics({"train_loss": step_loss, "learning_rate": lr, "tokens_per_second": rate,
                                 "mfu": progress.mfu(rate), **extra}, step=state.step)
        if main and progress.due(state.step, args.logging_steps, total):
            log.info("%s", progress.line(state, total, step_loss, lr))
        _evaluate_and_save(run, optimizer, state, epoch_done, total)
    return state


def _evaluate_and_save(run: TrainSetup, optimizer, state: State, epoch_done: bool, total: int) -> None:
    """After an optimizer step: evaluate when due (steps, epoch ends, the last step), keep the best model, decide
    on early stopping, and write the checkpoint that is due: `checkpoint-<step>-epoch-<n>` at an epoch's end,
    else `checkpoint-<step>` every `save_steps` and at every evaluation (save_eval_checkpoints)."""
    args = run.args
    on_steps = args.evaluate_during_training and state.step % args.evaluate_during_training_steps == 0
    on_epoch = args.evaluate_during_training and epoch_done and args.evaluate_each_epoch
    last = state.step == total
    result = None
    if run.evaluate is not None and (on_steps or on_epoch or (args.evaluate_during_training and last)):
        # An end-of-epoch evaluation counts towards early stopping only with early_stopping_consider_epochs.
        counts = on_steps or last or args.early_stopping_consider_epochs
        result = _evaluate_and_keep_best(run, state, counts)
    if args.no_save:
        return
    name = None
    if epoch_done and args.save_model_every_epoch:
        name = f"checkpoint-{state.step}-epoch-{state.epoch}"
    elif (args.save_steps and args.save_steps > 0 and state.step % args.save_steps == 0) or (
            result is not None and on_steps and args.save_eval_checkpoints):
        name = f"checkpoint-{state.step}"
    if name:
        save_checkpoint(run, optimizer, state, name, result)


def _evaluate_and_keep_best(run: TrainSetup, state: State, counts_for_stopping: bool) -> dict:
    args = run.args
    result = run.evaluate()
    metric = args.early_stopping_metric
    if metric not in result:
        raise ArgsError(f"early_stopping_metric={metric!r} is not an evaluation result; choose one of "
                        f"{', '.join(sorted(result))}")
    train_loss = state.train_loss[-1] if state.train_loss else float("nan")
    state.eval_history.append({"global_step": state.step, "train_loss": train_loss, **result})
    if dist.is_main():
        log.log(logging.INFO if args.evaluate_during_training_verbose else logging.DEBUG,
                "Eval at step %d: %s", state.step, _fmt(result))
        if run.tracker is not None:
            run.tracker.log_metrics({k if k.startswith("eval_") else f"eval_{k}": v for k, v in result.items()},
                                    step=state.step)
    value, best = result[metric], state.best_metric
    sign = 1.0 if args.early_stopping_metric_minimize else -1.0
    if best is None or sign * (best - value) > args.early_stopping_delta:
        state.best_metric, state.evals_without_improvement = value, 0
        if dist.is_main() and args.save_best_model and not args.no_save:
            atomic.replace_folder(Path(args.best_model_dir), lambda tmp: _write_with_results(run, tmp, result))
    elif counts_for_stopping:
        state.evals_without_improvement += 1
        if args.use_early_stopping and state.evals_without_improvement >= args.early_stopping_patience:
            state.stopped_early = True
            log.info("Early stopping at step %d: %s has not improved by more than %g for %d evaluations (best %.6g)",
                     state.step, metric, args.early_stopping_delta, state.evals_without_improvement, best)
    dist.barrier()
    return result


def _write_with_results(run: TrainSetup, folder: Path, result: dict | None) -> None:
    run.save_model(folder)
    if result:
        write_results(Path(folder) / "eval_results.txt", result)


def write_results(path: Path, result: dict) -> None:
    """`eval_results.txt`: one "name = value" line per result, sorted by name."""
    atomic.write_text(path, "".join(f"{k} = {result[k]}\n" for k in sorted(result)))


def save_checkpoint(run: TrainSetup, optimizer, state: State, name: str, result: dict | None = None) -> None:
    rngs = _gather_rng_states()
    if dist.is_main():
        payload = {**dataclasses.asdict(state), "world": dist.world(), "rng": rngs}
        if run.args.save_optimizer_and_scheduler:
            payload["optimizer"] = optimizer.state_dict()
        folder = run.output_dir / name
        checkpoint.save(folder, lambda tmp: _write_with_results(run, tmp, result), payload)
        checkpoint.rotate(run.output_dir, run.args.save_total_limit)
        log.info("Saved %s", folder)
    dist.barrier()


def _gather_rng_states() -> list:
    mine = checkpoint.rng_state()
    if dist.world() == 1:
        return [mine]
    out = [None] * dist.world()
    torch.distributed.all_gather_object(out, mine)
    return out


def _restore(saved: dict, optimizer) -> State:
    if "optimizer" in saved:
        initial = [group["initial_lr"] for group in optimizer.param_groups]
        optimizer.load_state_dict(saved["optimizer"])
        for group, lr in zip(optimizer.param_groups, initial):  # the schedule scales this run's initial rates
            group["initial_lr"] = lr
    else:
        log.warning("This checkpoint holds no optimizer state (saved with save_optimizer_and_scheduler=False): the "
                    "optimizer starts afresh, so this run will not match an uninterrupted one exactly")
    rngs = saved["rng"]
    if len(rngs) == dist.world():
        checkpoint.set_rng_state(rngs[dist.rank()])
    else:
        log.warning("Checkpoint was written by %d process(es), now %d: data order and masks continue exactly, "
                    "dropout randomness does not", len(rngs), dist.world())
    known = {f.name for f in dataclasses.fields(State)}
    return State(**{k: v for k, v in saved.items() if k in known})


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


class _Progress:
    """Tokens/s over the recent window and an ETA; decides when a progress line is due."""

    def __init__(self, total: int, start_step: int):
        self.total, self.start_step = total, start_step
        self.t0 = self.last_line = time.time()
        self.window: list[tuple[float, int]] = []
        self.flops_per_token, self.peak = 0.0, 0.0

    def mfu(self, tokens_per_second: float) -> float:
        """Model FLOPs utilisation: achieved model FLOP/s over the measured matmul peak of all processes."""
        return self.flops_per_token * tokens_per_second / self.peak if self.peak else 0.0

    def tick(self, step: int, tokens: int) -> float:
        self.window = (self.window + [(time.time(), tokens)])[-20:]
        return self.rate()

    def rate(self) -> float:
        """Tokens per second over the last (up to 20) steps."""
        if len(self.window) < 2:
            return self.window[0][1] / max(self.window[0][0] - self.t0, 1e-9) if self.window else 0.0
        span = self.window[-1][0] - self.window[0][0]
        return sum(t for _, t in self.window[1:]) / max(span, 1e-9)

    def due(self, step: int, every: int, total: int) -> bool:
        if step % every == 0 or step == total or step == self.start_step + 1 or time.time() - self.last_line > 30:
            self.last_line = time.time()
            return True
        return False

    def line(self, state: State, total: int, loss: float, lr: float) -> str:
        elapsed = time.time() - self.t0
        done = state.step - self.start_step
        eta = elapsed / max(done, 1) * (total - state.step)
        tps = self.rate()
        return (f"step {state.step}/{total} ({100 * state.step / total:.0f}%) | epoch {state.epoch} | "
                f"loss {loss:.4f} | lr {lr:.3g} | {tps:,.0f} tokens/s | MFU {100 * self.mfu(tps):.0f}% | "
                f"elapsed {_hms(elapsed)} | "
                f"ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
