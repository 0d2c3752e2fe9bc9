"""SIGKILL a training process at random moments, saves included; every relaunch continues from the newest
complete checkpoint, and the final weights equal those of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmcore.training.checkpoint import find
from tests.conftest import ROOT, sample_lines, tiny_args

pytestmark = pytest.mark.slow
STEPS = 40


def launch(spec: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmcore", "train", "--spec", str(spec)], cwd=spec.parent,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_when(proc: subprocess.Popen, out: Path, during_save: bool, rng: random.Random) -> bool:
    """SIGKILL `proc` while a checkpoint is being written (a .tmp folder exists), or at a random moment once
    training has started. False if the run finished first."""
    deadline = time.time() + 120
    started = None
    while proc.poll() is None and time.time() < deadline:
        saving = any(".tmp-" in p.name for p in out.glob("checkpoint-*")) if out.exists() else False
        if started is None and out.exists() and find(out):
            started = time.time()
        if (during_save and saving) or (not during_save and started and time.time() - started > rng.uniform(0, 1)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("\n".join(sample_lines("train.txt", 600)) + "\n")
    cache = str(tmp_path / "cache")

    def spec(name: str) -> Path:
        args = tiny_args("bert", tmp_path, max_steps=STEPS, save_steps=1, save_total_limit=3, logging_steps=10,
                         cache_dir=cache, output_dir=str(tmp_path / name), resume_from_checkpoint="latest")
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"model_type": "bert", "model_name": None, "train_files": [str(train)],
                                    "args": args}))
        return path

    reference = launch(spec("reference"))
    assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]

    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for attempt, during_save in enumerate([True, False, True, False, True]):
        proc = launch(spec("killed"))
        if not kill_when(proc, out, during_save, rng):
            assert proc.returncode == 0, proc.stdout.read()[-3000:]
            break
        kills += 1
        complete = find(out)
        for ckpt in complete:  # everything that looks like a checkpoint is whole and loadable
            assert (ckpt / "model.safetensors").exists()
            torch.load(ckpt / "training_state.pt", weights_only=True)
    assert kills >= 3
    final = launch(spec("killed"))
    log = final.communicate(timeout=300)[0]
    assert final.returncode == 0, log[-3000:]
    assert "Resuming from" in log

    a = load_file(tmp_path / "reference" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert a.keys() == b.keys() and not diffs, (diffs, log[-4000:])
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
