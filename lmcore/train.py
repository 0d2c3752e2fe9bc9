"""`fit()`: the training loop, readable top to bottom.

lr from the step -> micro-batches (masks seeded by their position) -> loss checked finite on every rank -> clip ->
step -> log -> evaluate -> checkpoint -> stop. Everything the loop needs to continue lives in `state`, which is
exactly what a checkpoint saves and what resume loads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import atomic, checkpoint, dist, hardware
from .args import LanguageModelingArgs
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
    compute_dtype: str = "float32"
    """The dtype matmuls run in (autocast's), for model FLOPs utilisation against that dtype's measured peak."""
    """Scale the loss (CUDA fp16 autocast): fp16 gradients underflow otherwise."""


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
    best_eval_loss: float = math.inf


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at `total`: a pure function of the
    step, so there is no scheduler state to lose on resume."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: torch.nn.Module, args: LanguageModelingArgs) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights (every parameter of fewer than 2 dimensions) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:  # the fused kernel is a few % faster per step, on the CPU too
        return torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon)


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
    warmup = args.warmup_steps if args.warmup_steps > 0 else math.ceil(total * args.warmup_ratio)
    optimizer = make_optimizer(model, args)
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
    while state.step < total:
        if batches is None:
            batches = epoch_batches(run.features, args.train_batch_size, args.seed, state.epoch, dist.rank(),
                                    dist.world(), run.group_by_length)
        lr = lr_at(state.step, total, warmup, args.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
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
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
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

        if run.evaluate is not None and args.evaluate_during_training and (
                state.step % args.evaluate_during_training_steps == 0 or state.step == total):
            _evaluate_and_keep_best(run, state)
        if _checkpoint_due(args, state.step, total, epoch_done):
            save_checkpoint(run, optimizer, state)
    return state


def _evaluate_and_keep_best(run: TrainSetup, state: State) -> None:
    result = run.evaluate()
    result = {"step": state.step, **result}
    state.eval_history.append(result)
    if dist.is_main():
        log.info("Eval at step %d: %s", state.step, _fmt(result))
        if run.tracker is not None:
            run.tracker.log_metrics({f"eval_{k}" if not k.startswith("eval_") else k: v
                                     for k, v in result.items() if k != "step"}, step=state.step)
    if result["eval_loss"] < state.best_eval_loss:
        state.best_eval_loss = result["eval_loss"]
        if dist.is_main():
            atomic.replace_folder(Path(run.args.best_model_dir), run.save_model)
    dist.barrier()


def _checkpoint_due(args: LanguageModelingArgs, step: int, total: int, epoch_done: bool) -> bool:
    if args.save_steps and args.save_steps > 0 and step % args.save_steps == 0:
        return True
    return epoch_done and args.save_model_every_epoch and step < total


def save_checkpoint(run: TrainSetup, optimizer, state: State) -> None:
    rngs = _gather_rng_states()
    if dist.is_main():
        payload = {"step": state.step, "epoch": state.epoch, "position": state.position,
                   "tokens_seen": state.tokens_seen, "train_loss": list(state.train_loss),
                   "learning_rate": list(state.learning_rate), "best_eval_loss": state.best_eval_loss,
                   "eval_history": [dict(e) for e in state.eval_history], "world": dist.world(),
                   "optimizer": optimizer.state_dict(), "rng": rngs}
        folder = run.output_dir / f"checkpoint-{state.step}"
        checkpoint.save(folder, run.save_model, payload)
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
    optimizer.load_state_dict(saved["optimizer"])
    rngs = saved["rng"]
    if len(rngs) == dist.world():
        checkpoint.set_rng_state(rngs[dist.rank()])
    else:
        log.warning("Checkpoint was written by %d process(es), now %d: data order and masks continue exactly, "
                    "dropout randomness does not", len(rngs), dist.world())
    return State(step=saved["step"], epoch=saved["epoch"], position=saved["position"],
                 tokens_seen=saved["tokens_seen"], train_loss=list(saved["train_loss"]),
                 learning_rate=list(saved["learning_rate"]), eval_history=list(saved["eval_history"]),
                 best_eval_loss=saved["best_eval_loss"])


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
