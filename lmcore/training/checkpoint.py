"""Checkpoints: one state that is both what is saved and what resume loads.

`checkpoint-<step>/` (every `save_steps`, and at evaluations) and `checkpoint-<step>-epoch-<n>/` (at the end of epoch
n) hold the model and tokenizer in Hugging Face format (loadable on their own), `model_args.json`,
and `training_state.pt`: optimizer, step, epoch, position in the epoch's data order, tokens seen, loss history and
every RNG state of this process. It is written under a temporary name, fsynced, then renamed: a checkpoint folder
with the final name is always complete, and an interrupted save leaves only a `.tmp-*` folder that is never loaded
(and is cleared by the next save).
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..base import atomic

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)(?:-epoch-(\d+))?$")


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                    *np_state[2:]], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def save(folder: Path, write_model: Callable[[Path], None], state: dict) -> Path:
    """Write a complete checkpoint at `folder` atomically: `write_model(tmp)` then the training state."""
    folder = Path(folder)
    for stale in [*folder.parent.glob("checkpoint-*.tmp-*"), *folder.parent.glob("checkpoint-*.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)

    def write(tmp: Path) -> None:
        write_model(tmp)
        torch.save(state, tmp / STATE_FILE)

    return atomic.replace_folder(folder, write)


def is_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def find(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    out = []
    if Path(output_dir).is_dir():
        for p in Path(output_dir).iterdir():
            m = _NAME.match(p.name)
            if m and is_checkpoint(p):
                out.append((int(m.group(1)), m.group(2) is not None, p.name, p))
    return [entry[-1] for entry in sorted(out)]


def latest(output_dir: str | Path) -> Path | None:
    found = find(output_dir)
    return found[-1] if found else None


def load_state(folder: str | Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")


def rotate(output_dir: str | Path, keep: int | None) -> None:
    """Delete all but the newest `keep` checkpoints."""
    if not keep:
        return
    for old in find(output_dir)[:-keep]:
        log.info("Removing old checkpoint %s (save_total_limit=%d)", old, keep)
        shutil.rmtree(old, ignore_errors=True)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} kB"


def disk_summary(output_dir: str | Path, args) -> str:
    """What a finished run left in `output_dir` and why, in one sentence: the final model, and each checkpoint
    (weights, plus optimizer state when saved: what continuing from it needs), with the settings that keep fewer."""
    out = Path(output_dir)
    checkpoints = find(out)
    total = _size(out)
    held = sum(_size(c) for c in checkpoints)
    text = f"{out} holds {_mb(total)}: the model {_mb(total - held)}"
    if not checkpoints:
        return text + "."
    names = ", ".join(f"{c.name} ({_mb(_size(c))})" for c in checkpoints)
    why = "weights and optimizer state, to resume or continue" if args.save_optimizer_and_scheduler else "weights"
    keep = ("save_total_limit, save_steps=-1 and save_model_every_epoch=False keep fewer"
            if not args.save_total_limit else f"the newest {args.save_total_limit} kept (save_total_limit)")
    return f"{text}; checkpoints {names}: {why}; {keep}."
