"""`fit()`: the training loop, readable top to bottom, around `train_step()`: one optimizer step.

`train_step`: forward over the step's micro-batches (masks seeded by their position), backward, clip, and the
optimizer step, guarded against a non-finite loss. `fit` is the schedule around it: the learning rate from the
step, which micro-batches come next, when to log (the one host sync of a logging window), evaluate, checkpoint and
stop. Everything the loop needs to continue lives in `state`, which is exactly what a checkpoint saves and what
resume loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint, compiling, dist, hardware, optim
from ..base import atomic
from ..models.args import ArgsError, LanguageModelingArgs
from ..data.batches import collate, epoch_batches, split_by_length
from ..data.features import Features
from .evaluate import batch_generator
from ..base.host import to_device
from ..objectives.language import Objective
from .precision import Precision
from .progress import TrainingProgress

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; nothing was stepped with it."""


@dataclass
class TrainSetup:
    """What `fit` trains and with what; built by the front doors' `train_model`."""

    model: torch.nn.Module
    objective: Objective
    features: Features
    args: LanguageModelingArgs
    device: torch.device
    precision: Precision
    """What the run computes in (autocast dtype, loss scaling), resolved by the front door with the device."""
    pad_id: int
    output_dir: Path
    save_model: Callable[[Path], None]
    """Writes the model, tokenizer and args into a folder (rank 0 only)."""
    evaluate: Callable[[], dict] | None = None
    tracker: object = None
    resume: dict | None = None
    """A loaded checkpoint state to continue from."""
    group_by_length: bool = False
    on_evaluation: Callable[[int, dict], str | None] | None = None
    """Called on the main process after each evaluation with (step, results); a non-empty answer stops training
    there on every process, with that answer as the reason (a sweep stops a trial that is clearly behind)."""


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
    stopped_by: str | None = None
    """Why `on_evaluation` stopped training, when it did."""
    compiled: bool = False
    """This process's training steps ran compiled (lmcore.training.compiling); not restored on resume."""
    compile_warmup_s: float | None = None
    """Seconds the first compiled step took beyond a compiled step: what compiling cost this process."""


def plan(features: Features, args: LanguageModelingArgs) -> tuple[int, int]:
    """(micro-batches per epoch for this rank, total optimizer steps)."""
    micro = len(epoch_batches(features, args.train_batch_size, args.seed, 0, dist.rank(), dist.world(),
                              accumulate=args.gradient_accumulation_steps))
    steps_per_epoch = math.ceil(micro / args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps and args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    return micro, total


def fit(run: TrainSetup) -> State:
    args, device = run.args, run.device
    main = dist.is_main()
    micro_per_epoch, total = plan(run.features, args)
    warmup = optim.warmup_steps(args, total)
    optimizer = optim.make_optimizer(run.model, args)
    state = State()
    if run.resume is not None:
        state = _restore(run.resume, optimizer)
        log.info("Resuming at step %d (epoch %d, micro-batch %d)", state.step, state.epoch, state.position)
    stepper = make_stepper(run, optimizer)
    compiled = compiling.Compiled(run.model, compiling.decide(args.compile, run.precision, total))
    if main:
        log.info("compile: %s (%s)", "on" if compiled.on else "off", compiled.decision.reason)
    compiled.start()
    run.model.train()
    start_step = state.step
    progress = TrainingProgress(total, state.step, run.precision) if main else None
    window = _Window(run.objective, run.tracker if main else None, args.learning_rate)
    source = _MicroBatches(run)
    try:
        while state.step < total and not state.stopped_early and not state.stopped_by:
            multiplier = optim.lr_multiplier(args, state.step, total, warmup)
            optim.set_learning_rates(optimizer, multiplier)
            lr = args.learning_rate * multiplier  # what is logged: custom groups scale their own rates alike
            micro, used = source.step(state.epoch, state.position)
            if main and progress.flops_per_position is None:
                with progress.paused(), compiling.eager():  # one extra forward/backward, not training
                    progress.flops_per_position = hardware.measured_flops_per_position(
                        run.model, run.objective, to_device(micro[0], device))
            with progress.one_off() if main and compiled.warming else contextlib.nullcontext():
                done = compiled.step(lambda: train_step(stepper, micro),  # the first compiled one: its warm-up
                                     rows=sum(len(p["input_ids"]) for p in micro))
            if done.refused:
                window.add(state.step + 1, done.sums, done.totals, done.bad, lr)
                window.flush(state)  # raises, naming the step; nothing was applied
            step_tokens = sum(p["tokens"] for p in micro) * dist.world()
            state.step += 1
            state.position += used
            state.tokens_seen += step_tokens
            state.learning_rate.append(lr)
            epoch_done = state.position >= micro_per_epoch
            if epoch_done:
                state.epoch, state.position = state.epoch + 1, 0
            if main:
                progress.tick(step_tokens, sum(p["input_ids"].numel() for p in micro) * dist.world())
            window.add(state.step, done.sums, done.totals, done.bad, lr)
            evaluate_now, checkpoint_name = _due(run, state, epoch_done, total)
            logging_now = state.step % args.logging_steps == 0 or state.step == total or \
                state.step == start_step + 1
            # A line is also due after 30 s without one; on one process it syncs like a logging step (under DDP
            # the ranks would have to agree on the clock first, so it shows the last synced loss, saying so).
            quiet = main and not logging_now and progress.quiet_too_long()
            if logging_now or evaluate_now or checkpoint_name or (quiet and dist.world() == 1):
                window.flush(state)  # the one host sync: losses, metrics and the non-finite check
            if main and (logging_now or quiet):
                figures = progress.window_figures()
                log.info("%s", progress.line(state, total, window.report(), lr, figures))
                if run.tracker is not None:
                    run.tracker.log_metrics(figures, step=state.step)
            with progress.paused() if main else contextlib.nullcontext(), compiling.eager():
                _evaluate_and_save(run, optimizer, state, evaluate_now, checkpoint_name, epoch_done,
                                   last=state.step >= total)
    finally:
        source.close()
        compiled.stop()
    state.compiled, state.compile_warmup_s = compiled.on, compiled.warmup_s
    if main and run.tracker is not None and compiled.warmup_s is not None:
        run.tracker.log_metrics({"compile_warmup_s": compiled.warmup_s}, step=state.step)
    return state


# ---- one optimizer step -----------------------------------------------------------------------------------------

@dataclass
class Stepper:
    """What every optimizer step of a run uses, fixed when the run starts (`make_stepper`)."""

    module: torch.nn.Module
    """What the objective calls: the training module, wrapped in DistributedDataParallel under several processes."""
    objective: Objective
    optimizer: torch.optim.Optimizer
    trained: list
    """The parameters the optimizer steps (the ones clipped)."""
    clip: float
    """max_grad_norm, or inf when gradients are not clipped (the norm is still computed: it is the finite check)."""
    device: torch.device
    precision: Precision
    term_weights: torch.Tensor
    """(terms,) each loss term's weight in the step's loss, on the device."""
    scaler: torch.amp.GradScaler | None
    stepping: str
    """How a non-finite step is kept from being applied: "grad scaler" (fp16: the scaler skips it and lowers the
    scale), "on device" (fused AdamW skips it itself, told through GradScaler's found_inf: no host sync per step),
    "on host" (any other optimizer: the step's finiteness is read on the host every step)."""


@dataclass
class StepResult:
    """What one optimizer step leaves for the schedule: device tensors, read at the logging window's one sync."""

    sums: torch.Tensor
    """(terms,) each loss term's sum over the step's micro-batches on this process (device)."""
    totals: torch.Tensor
    """(terms,) what each term scored over the step, all processes (device): sums / totals are the mean losses."""
    bad: torch.Tensor
    """() bool on the device: the step was not finite (its loss; without a grad scaler, also its gradients) and was
    not applied. Training stops at the next sync, naming it."""
    refused: bool = False
    """Known on the host ("on host" stepping): the step was not finite and was not applied; training must stop."""


def make_stepper(run: TrainSetup, optimizer: torch.optim.Optimizer) -> Stepper:
    """The run's Stepper: DDP around the training module under several processes, and the stepping mode that
    needs the fewest host syncs for this precision and optimizer."""
    module = run.model
    if dist.world() > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(run.device.type) if run.precision.grad_scaler else None
    if scaler is not None:
        stepping = "grad scaler"
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        stepping = "on device"
    else:
        stepping = "on host"
    objective = run.objective
    return Stepper(
        module=module, objective=objective, optimizer=optimizer,
        trained=[p for group in optimizer.param_groups for p in group["params"]],
        clip=run.args.max_grad_norm if optim.clips_gradients(run.args) else math.inf, device=run.device,
        precision=run.precision,
        term_weights=torch.tensor([objective.weights[t] for t in objective.terms], dtype=torch.float32,
                                  device=run.device),
        scaler=scaler, stepping=stepping)


def train_step(stepper: Stepper, micro: list[dict]) -> StepResult:
    """One optimizer step over `micro`, the step's prepared micro-batches (host tensors): forward and backward of
    each (gradients averaged over processes on the last one only), clip, and the optimizer step unless the loss
    or the gradients are not finite. No host sync, except in "on host" stepping."""
    s = stepper
    totals = _global_counts(s.objective, micro, s.device)
    sums = torch.zeros(len(s.objective.terms), dtype=torch.float32, device=s.device)
    for k, prepared in enumerate(micro):
        on_device = to_device(prepared, s.device)
        sync = k == len(micro) - 1 or dist.world() == 1
        with (contextlib.nullcontext() if sync else s.module.no_sync()), s.precision.autocast(), \
                hardware.cpu_dropout(s.device):
            parts = s.objective.loss_sums(s.module, on_device)
        parts = torch.stack([parts[t].float() for t in s.objective.terms])
        # Each term's sum over its tokens in the whole step, all processes (DDP averages the gradients over
        # processes, hence the world factor): every scored token weighs the same.
        loss = (parts / totals * s.term_weights).sum() * dist.world()
        (s.scaler.scale(loss) if s.scaler else loss).backward()
        sums += parts.detach()
    return _clip_and_step(s, sums, totals)


def _clip_and_step(s: Stepper, sums: torch.Tensor, totals: torch.Tensor) -> StepResult:
    """Clip, then step the optimizer the way the run's stepping mode keeps a non-finite step out (one branch
    each)."""
    if s.scaler:
        s.scaler.unscale_(s.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(s.trained, s.clip)
    bad = ~torch.isfinite(grad_norm) | ~torch.isfinite(sums.sum())
    if dist.world() > 1:
        bad = ~torch.isfinite(grad_norm)  # the gradients are reduced: every process agrees on this one
    refused = False
    if s.stepping == "grad scaler":  # an infinite fp16 gradient only means "lower the scale": the scaler skips it
        s.scaler.step(s.optimizer)
        s.scaler.update()
        bad = ~torch.isfinite(sums.sum())  # only a non-finite loss is an error
    elif s.stepping == "on device":
        s.optimizer.found_inf, s.optimizer.grad_scale = bad.float(), None
        s.optimizer.step()
    elif bool(bad):
        refused = True
    else:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, totals, bad, refused)


def _global_counts(objective: Objective, micro: list[dict], device) -> torch.Tensor:
    """Tokens each loss term scores in this optimizer step, over all micro-batches and processes (counted on
    the host when the masks were drawn; one small all-reduce before the backward pass under DDP)."""
    counts = torch.tensor([[p["counts"][t] for t in objective.terms] for p in micro], dtype=torch.float32).sum(0)
    counts = counts.to(device, non_blocking=True)
    if dist.world() > 1:
        torch.distributed.all_reduce(counts)
    return counts.clamp(min=1.0)


# ---- the schedule's helpers -------------------------------------------------------------------------------------

class _MicroBatches:
    """The prepared micro-batches (collated, masked: host work) of each optimizer step, the next step's made in
    a background thread while the current one computes. A pure function of (seed, epoch, position), so prefetching
    changes nothing a resumed run would see."""

    def __init__(self, run: TrainSetup):
        self.run = run
        self.accumulate = run.args.gradient_accumulation_steps
        self.pin = run.device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmcore-batches")
        self.pending: tuple | None = None
        self.epoch_order: dict[int, list] = {}
        self.lengths = run.features.lengths()

    def _batches(self, epoch: int) -> list:
        if epoch not in self.epoch_order:
            args = self.run.args
            self.epoch_order = {epoch: epoch_batches(self.run.features, args.train_batch_size, args.seed, epoch,
                                                     dist.rank(), dist.world(), self.run.group_by_length,
                                                     self.accumulate)}
        return self.epoch_order[epoch]

    def _prepare(self, epoch: int, group: list) -> tuple[list[dict], int]:
        """(the step's prepared chunks, the micro-batches of the epoch's order they hold): each micro-batch of
        examples of differing lengths is cut into chunks of similar length (batches.split_by_length)."""
        out = []
        for indices in group:
            for chunk in split_by_length(self.lengths, indices):
                batch = collate(self.run.features, chunk, self.run.pad_id)
                seed = self.run.args.seed
                prepared = self.run.objective.prepare(batch, lambda i: batch_generator(seed, epoch, i))
                prepared["tokens"] = int(batch["attention_mask"].sum())
                if self.pin:
                    prepared = {k2: v.pin_memory() if isinstance(v, torch.Tensor) else v
                                for k2, v in prepared.items()}
                out.append(prepared)
        return out, len(group)

    def step(self, epoch: int, position: int) -> tuple[list[dict], int]:
        """(the prepared chunks of the step at `position`, how many micro-batches of the epoch's order it used)."""
        key = (epoch, position)
        if self.pending is not None and self.pending[0] == key:
            micro, used = self.pending[1].result()
        else:
            micro, used = self._prepare(epoch, self._batches(epoch)[position:position + self.accumulate])
        following = position + used
        batches = self._batches(epoch)
        self.pending = None
        if following < len(batches):
            group = batches[following:following + self.accumulate]
            self.pending = ((epoch, following), self.pool.submit(self._prepare, epoch, group))
        return micro, used

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Window:
    """Per-step loss sums kept on the device between logging steps and turned into numbers in one transfer: the
    per-step training loss (token-weighted over the step's micro-batches and processes), the tracker's per-step
    metrics, and the non-finite check. A non-finite step was never applied (skipped on the device); the first
    one found stops training with its step number, before any later checkpoint is written."""

    def __init__(self, objective, tracker, learning_rate: float):
        self.objective, self.tracker, self.learning_rate = objective, tracker, learning_rate
        self.rows: list[tuple] = []
        self.reported: list[tuple[int, float]] = []
        """(step, loss) of the steps synced since the last progress line."""
        self.last: tuple[int, float] | None = None

    def add(self, step: int, sums, totals, bad, lr: float) -> None:
        self.rows.append((step, sums, totals, bad, lr))

    def report(self) -> str:
        """The loss a progress line shows: the mean over the steps since the previous line (each step's loss is
        logged to the tracker), or, when no step was synced since (a timed line under DDP), the last one with
        its step."""
        if not self.reported:
            return "loss n/a" if self.last is None else f"loss {self.last[1]:.4f} (step {self.last[0]})"
        steps = [s for s, _ in self.reported]
        mean = sum(v for _, v in self.reported) / len(self.reported)
        span = f"step {steps[0]}" if len(steps) == 1 else f"mean of steps {steps[0]}-{steps[-1]}"
        self.last, self.reported = self.reported[-1], []
        return f"loss {mean:.4f} ({span})"

    def flush(self, state: State) -> None:
        if not self.rows:
            return
        sums = torch.stack([r[1] for r in self.rows])
        if dist.world() > 1:
            torch.distributed.all_reduce(sums)
        totals = torch.stack([r[2] for r in self.rows])
        bad = torch.stack([r[3].reshape(()) for r in self.rows]).float()
        values = torch.cat([(sums / totals).flatten(), bad]).tolist()
        terms, rows, self.rows = self.objective.terms, self.rows, []
        per_term, flags = values[:len(rows) * len(terms)], values[len(rows) * len(terms):]
        for i, (step, *_, lr) in enumerate(rows):
            means = dict(zip(terms, per_term[i * len(terms):(i + 1) * len(terms)]))
            loss = sum(self.objective.weights[t] * means[t] for t in terms)
            if flags[i]:
                raise NonFiniteLossError(
                    f"step {step}: the training loss is {loss} on at least one process; that step (and any later "
                    f"non-finite one) was skipped without touching the weights, and training stopped at step "
                    f"{state.step}, so the last checkpoint is intact. Try a lower learning_rate (now "
                    f"{self.learning_rate}), mixed_precision='no', or check the corpus.")
            state.train_loss.append(loss)
            self.reported.append((step, loss))
            if self.tracker is not None:
                parts = {f"{t}_loss": means[t] for t in terms} if len(terms) > 1 else {}
                self.tracker.log_metrics({"train_loss": loss, "learning_rate": lr, **parts}, step=step)


def _due(run: TrainSetup, state: State, epoch_done: bool, total: int) -> tuple[bool, str | None]:
    """(evaluate now?, the checkpoint to write now or None), decided the same way on every process:
    evaluations every `evaluate_during_training_steps`, at epoch ends (evaluate_each_epoch) and at the last step;
    `checkpoint-<step>-epoch-<n>` at an epoch's end, else `checkpoint-<step>` every `save_steps` and at every
    step evaluation (save_eval_checkpoints)."""
    args = run.args
    on_steps = args.evaluate_during_training and state.step % args.evaluate_during_training_steps == 0
    on_epoch = args.evaluate_during_training and epoch_done and args.evaluate_each_epoch
    evaluate = run.evaluate is not None and (on_steps or on_epoch or (args.evaluate_during_training
                                                                      and state.step == total))
    name = None
    if not args.no_save:
        if epoch_done and args.save_model_every_epoch:
            name = f"checkpoint-{state.step}-epoch-{state.epoch}"
        elif (args.save_steps and args.save_steps > 0 and state.step % args.save_steps == 0) or (
                evaluate and on_steps and args.save_eval_checkpoints):
            name = f"checkpoint-{state.step}"
    return evaluate, name


def _evaluate_and_save(run: TrainSetup, optimizer, state: State, evaluate: bool, checkpoint_name: str | None,
                       epoch_done: bool, last: bool = False) -> None:
    """After an optimizer step: evaluate when due, keep the best model, decide on early stopping, and write the
    checkpoint that is due (with the evaluation's results beside it)."""
    args = run.args
    result = None
    if evaluate:
        # An end-of-epoch evaluation counts towards early stopping only with early_stopping_consider_epochs.
        on_steps = state.step % args.evaluate_during_training_steps == 0
        counts = on_steps or not epoch_done or args.early_stopping_consider_epochs
        result = _evaluate_and_keep_best(run, state, counts, last)
    if checkpoint_name:
        save_checkpoint(run, optimizer, state, checkpoint_name, result)


def _evaluate_and_keep_best(run: TrainSetup, state: State, counts_for_stopping: bool, last: bool = False) -> dict:
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
    _ask_whether_to_go_on(run, state, result, last)
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


def _ask_whether_to_go_on(run: TrainSetup, state: State, result: dict, last: bool = False) -> None:
    """`on_evaluation` on the main process; its answer is broadcast so that every process stops at this step. At
    the last step it is told the evaluation all the same, and its answer does not matter: the run has finished,
    not stopped. A hook that fails is logged and counts as "go on" (what it decides is advice, not training)."""
    if run.on_evaluation is None:
        return
    reason = None
    if dist.is_main():
        try:
            reason = run.on_evaluation(state.step, dict(result))
        except Exception as e:
            log.warning("on_evaluation failed at step %d (%s: %s); training goes on", state.step,
                        type(e).__name__, e)
    if last:
        return
    if dist.world() > 1:
        box = [reason]
        torch.distributed.broadcast_object_list(box, src=0)
        reason = box[0]
    if reason:
        state.stopped_by = str(reason)
        log.info("Stopping at step %d: %s", state.step, reason)


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
    # A resumed run was asked to go on, and decides (and measures) compiling for itself.
    known = {f.name for f in dataclasses.fields(State)} - {"stopped_by", "compiled", "compile_warmup_s"}
    return State(**{k: v for k, v in saved.items() if k in known})


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())
